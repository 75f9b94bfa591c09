"""Atomic writes: an interrupted write leaves the previous file whole and no debris."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from alignlab._io import write_bytes_atomic, write_json_atomic, write_text_atomic


def test_interrupted_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "study" / "installed.json"
    write_json_atomic(path, {"attack_success": 1.0})
    assert json.loads(path.read_text()) == {"attack_success": 1.0}

    def killed(*_args: object) -> None:
        raise KeyboardInterrupt  # the process is interrupted between writing and renaming

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_text_atomic(path, '{"attack_success": 0.0, "trunc')
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"attack_success": 1.0}
    assert sorted(p.name for p in path.parent.iterdir()) == ["installed.json"]


def test_unserialisable_data_never_touches_the_file(tmp_path: Path) -> None:
    path = tmp_path / "fit.json"
    write_json_atomic(path, {"alpha": 0.13})
    with pytest.raises(ValueError):
        write_json_atomic(path, {"alpha": float("nan")}, allow_nan=False)
    assert json.loads(path.read_text()) == {"alpha": 0.13}


def test_bytes_are_written_whole_with_the_umask_permissions(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        path = write_bytes_atomic(tmp_path / "plots" / "loss.png", b"\x89PNG\r\n\x00")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"\x89PNG\r\n\x00"
    # As open(path, "wb") would make it (mkstemp's owner-only 0600 would hide reports from a group).
    assert path.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in path.parent.iterdir()) == ["loss.png"]
