"""The ``alignlab`` command line: one small module per command group, no logic of its own.

Every module registers itself the same way (``register(app)``); shared options and the one error
printer live in `alignlab.cli._common`.
"""

from __future__ import annotations

import os

from alignlab._alloc import tune_allocator
from alignlab.cli import (
    attribute_cmd,
    eval_cmd,
    interp_cmd,
    report_cmd,
    runs,
    sample,
    scaling_cmd,
    study_cmd,
    train,
)
from alignlab.cli._common import StoreOpt, fail, group
from alignlab.errors import AlignlabError

app = group("alignlab — an empirical AI-safety workbench.")


@app.callback()
def _root(store: StoreOpt = None) -> None:
    # Given before the command, --store applies to every command (through ALIGNLAB_STORE).
    if store is not None:
        os.environ["ALIGNLAB_STORE"] = str(store)


# Order sets the order of `alignlab --help`.
for _module in (
    train,
    study_cmd,
    runs,
    sample,
    eval_cmd,
    interp_cmd,
    scaling_cmd,
    report_cmd,
    attribute_cmd,
):
    _module.register(app)


def main() -> None:
    """Entry point: user mistakes print one line (what is wrong, how to fix it), exit code 2."""
    tune_allocator()  # every command that runs a model gains; see alignlab._alloc
    try:
        app()  # standalone: click reports its own usage errors (an unknown option) and exits
    except AlignlabError as e:
        fail(e)
