"""Re-create and verify the vendored evaluation data in ``alignlab/data``.

The JSONL files are stored gzip-compressed (``gzip -9 -n``: no name, no timestamp, so the bytes are
reproducible) to keep the package small; ``MANIFEST.json`` records, for every stored file, the
upstream path, the SHA-256 of the upstream bytes (as in the upstream ``SHA256SUMS``), the SHA-256 of
the stored bytes and the row count. The loaders check the stored hash before parsing.

Example:
    $ python -m alignlab.evals.vendor /path/to/shared/data   # rebuild alignlab/data from sources
    $ python -m alignlab.evals.vendor --check                # verify every stored file
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from alignlab._io import write_json_atomic

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
MANIFEST = "MANIFEST.json"

# (source collection, files copied) - only what the eval harness uses.
_SOURCES: dict[str, list[str]] = {
    "anthropic-evals": [
        "advanced-ai-risk/human_generated_evals/*.jsonl",
        "advanced-ai-risk/lm_generated_evals/*.jsonl",
        "persona/*.jsonl",
        "winogenerated/*.jsonl",
    ],
    "bbq": ["data/*.jsonl"],
    "hh-rlhf": ["harmless-base/test.jsonl.gz"],
}
# Licence and provenance files copied unchanged next to the data.
_NOTES = ["LICENSE", "README.md", "SHA256SUMS"]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _gzip(data: bytes) -> bytes:
    # mtime=0 and no file name: the same input always gives the same bytes (and hash).
    return gzip.compress(data, compresslevel=9, mtime=0)


def vendor(source: Path, dest: Path = DATA_DIR) -> dict[str, Any]:
    """Copy the used files from ``source`` (the shared data folder) into ``dest``; write the manifest."""
    entries: dict[str, Any] = {}
    for collection, patterns in _SOURCES.items():
        src_root = source / collection
        for note in _NOTES:
            (dest / collection).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src_root / note, dest / collection / note)
        for pattern in patterns:
            for src in sorted(src_root.glob(pattern)):
                rel = src.relative_to(src_root).as_posix()
                raw = src.read_bytes()
                text = gzip.decompress(raw) if src.suffix == ".gz" else raw
                stored = raw if src.suffix == ".gz" else _gzip(raw)
                out_rel = f"{collection}/{rel}" + ("" if src.suffix == ".gz" else ".gz")
                out = dest / out_rel
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(stored)
                entries[out_rel] = {
                    "upstream_path": f"{collection}/{rel}",
                    "upstream_sha256": sha256(raw),
                    "sha256": sha256(stored),
                    "rows": sum(1 for line in text.splitlines() if line.strip()),
                }
    manifest = {"files": entries}
    write_json_atomic(dest / MANIFEST, manifest, indent=1, sort_keys=True)
    return manifest


def check(dest: Path = DATA_DIR) -> list[str]:
    """Problems with the stored files (hash mismatches, missing files); empty when all is well."""
    manifest = json.loads((dest / MANIFEST).read_text())
    problems = []
    for rel, entry in manifest["files"].items():
        path = dest / rel
        if not path.exists():
            problems.append(f"{rel}: missing")
            continue
        stored = path.read_bytes()
        if sha256(stored) != entry["sha256"]:
            problems.append(f"{rel}: sha256 differs from {MANIFEST}")
        upstream = stored if entry["upstream_path"].endswith(".gz") else gzip.decompress(stored)
        if sha256(upstream) != entry["upstream_sha256"]:
            problems.append(f"{rel}: content differs from upstream {entry['upstream_path']}")
    return problems


def main(argv: list[str]) -> int:
    if argv[:1] == ["--check"]:
        problems = check()
        print("\n".join(problems) or "all vendored files match MANIFEST.json and upstream hashes")
        return 1 if problems else 0
    if len(argv) != 1:
        print(__doc__)
        return 2
    manifest = vendor(Path(argv[0]))
    print(f"vendored {len(manifest['files'])} files into {DATA_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
