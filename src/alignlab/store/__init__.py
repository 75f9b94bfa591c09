"""The run store: every run's config, status, metrics and artifact folder.

``Store`` keeps an SQLite database (WAL mode, safe across processes) at ``root/store.sqlite`` and
one folder per run at ``root/runs/<run_id>/``. ``run_id`` is the only way alignlab names runs.
"""

from alignlab.store.ids import run_id
from alignlab.store.runs import STATUSES, Run, Status, Store

__all__ = ["STATUSES", "Run", "Status", "Store", "run_id"]
