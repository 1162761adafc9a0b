"""Named fault points: where the fault campaign (tests/faults/, bench/faults.py) stops a worker
to kill it at a chosen moment.

`fault_point("merge.after_update_ref")` does nothing unless the environment variable
`GASTOWN_FAULT_PAUSE` names that point (a comma-separated list). Then the first process to
get there writes `<GASTOWN_FAULT_DIR>/<point>` (its pid inside) and sleeps
(`GASTOWN_FAULT_PAUSE_SECONDS`, 600 by default) so the test can SIGKILL it there; if nobody
does, it carries on. Once per marker: the task redelivered after the kill runs through. One
`os.environ` read when unset: free in production, where nothing sets it."""

import os
import tempfile
import time
from pathlib import Path

POINTS = {
    "worktree.add": "a rig's `git worktree add` ran, under the repository lock, before setup",
    "merge.before_update_ref": "a merge candidate was built and gated, before `update-ref`",
    "merge.after_update_ref": "the target moved (`update-ref`), before the database records it",
    "landing.recording": "a landing's records are written, its transaction not yet committed",
    "gate.running": "a merge candidate's gate is running in its throwaway worktree",
    "cascade.reading": "a landing's cascade read what changed, before notices are stored",
}


def fault_point(name: str) -> None:
    wanted = os.environ.get("GASTOWN_FAULT_PAUSE")
    if not wanted or name not in wanted.split(","):
        return
    if name not in POINTS:
        raise ValueError(f"unknown fault point {name!r}")
    directory = Path(os.environ.get("GASTOWN_FAULT_DIR") or tempfile.gettempdir())
    try:  # once per marker: the task redelivered after the kill must run through
        fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as marker:
        marker.write(str(os.getpid()))
    time.sleep(float(os.environ.get("GASTOWN_FAULT_PAUSE_SECONDS", "600")))
