"""RUN/log.jsonl, the live record of training: one JSON object per logging step, appended and flushed."""

from __future__ import annotations

import json
from pathlib import Path


def append_log(path: str | Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, allow_nan=True) + "\n")
        fh.flush()


def read_log(path: str | Path) -> list[dict]:
    """Log records; a torn last line (killed mid-write) is ignored."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out
