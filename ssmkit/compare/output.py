"""The report folder is built beside its destination and moved into place only when complete, so a failed run never
leaves half a report where an old one was.

    with staging(out) as tmp:      # a fresh folder next to `out`
        ... write files into tmp ...
    # here `out` holds the new report; on an exception, `out` is untouched and tmp is gone
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

MARKER = "ssmkit compare"  # results.json's "generator": how a folder is known to be a previous report


def check_out_dir(out: str) -> None:
    """A ValueError unless `out` can become the report folder: absent, empty, or a previous report (replaced)."""
    if not isinstance(out, str) or not out:
        raise ValueError(f"--out: expected a folder path, got {out!r}")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out: {out} exists and is not a folder")
    if os.path.isdir(out) and os.listdir(out) and not is_report(out):
        raise ValueError(
            f"--out: {out} is a non-empty folder that holds no ssmkit compare report (no results.json from "
            "a previous run); refusing to replace it: give a new or empty folder"
        )
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise ValueError(f"--out: the parent folder {parent} does not exist")


def is_report(folder: str) -> bool:
    try:
        with open(os.path.join(folder, "results.json")) as f:
            return json.load(f).get("generator") == MARKER
    except (OSError, ValueError, AttributeError):
        return False


@contextlib.contextmanager
def staging(out: str) -> Iterator[str]:
    out = os.path.abspath(out)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(out), prefix=f".{os.path.basename(out)}.tmp-")
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 would make the report private once renamed
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _move_into_place(tmp, out)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _move_into_place(tmp: str, out: str) -> None:
    """tmp -> out. An existing report is first renamed aside, and put back if the second rename fails."""
    if not os.path.exists(out):
        os.rename(tmp, out)
        return
    check_out_dir(out)  # still empty or a report: nothing else is ever removed
    old = tempfile.mkdtemp(dir=os.path.dirname(out), prefix=f".{os.path.basename(out)}.old-")
    os.rmdir(old)
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_json(path: str, payload: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, default=_default)  # Infinity as ModelConfig.to_json writes it (dt_limit)
        f.write("\n")


def _default(obj: Any) -> Any:
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"results.json: cannot serialize {type(obj).__name__}")
