"""Run logs on disk: bounded while written, pruned when old.

A run's output can be large (an LLM agent's stream-json runs to megabytes a session) and there
can be hundreds of runs a day, so a log keeps at most GASTOWN_RUN_LOG_MAX_BYTES of output (its
head, then its tail at the end) and logs older than GASTOWN_RUN_LOG_RETENTION_DAYS are deleted.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from django.conf import settings

from runner.models import AgentRun

TAIL_MAX = 1024 * 1024
_LOG_NAME = re.compile(r"run-(\d+)\.log")


class CappedLog:
    """A run's log file that keeps at most ``limit`` bytes of the command's output (0: all of
    it): the first bytes up to the limit, a line where output starts being left out, and at
    close a line saying how much was left out followed by the last bytes (at most a quarter of
    the limit, and 1 MiB). The head says what the agent set out to do, the tail how it ended.
    Gas Town's own lines (``note``) are always written."""

    def __init__(self, path: str | Path, limit: int) -> None:
        self.file = open(path, "ab", buffering=0)  # noqa: SIM115  (open for the run's life)
        self.limit = max(0, limit)
        self.tail_max = min(TAIL_MAX, self.limit // 4)
        self.written = 0
        self.dropped = 0
        self.tail = bytearray()

    def write(self, data: bytes) -> None:
        if not self.limit:
            self.file.write(data)
            return
        room = self.limit - self.written
        if room > 0:
            self.file.write(data[:room])
            self.written += min(room, len(data))
            data = data[room:]
            if not data:
                return
            self.note(
                f"\n# gastown: the log limit of {self.limit} bytes is reached: output is left "
                f"out from here; its last {self.tail_max} bytes are added when the run ends\n"
            )
        self.dropped += len(data)
        self.tail += data
        del self.tail[: max(0, len(self.tail) - self.tail_max)]

    def note(self, text: str) -> None:
        self.file.write(text.encode())

    def close(self, last_line: str = "") -> None:
        """Add the kept tail (when output was left out), then ``last_line``, and close."""
        if self.dropped:
            left_out = self.dropped - len(self.tail)
            self.note(f"\n# gastown: {left_out} bytes left out; the last {len(self.tail)}:\n")
            self.file.write(bytes(self.tail))
            if not self.tail.endswith(b"\n"):
                self.file.write(b"\n")
        self.note(last_line)
        self.file.close()


def run_logs_prune(*, older_than_days: float | None = None) -> list[Path]:
    """Delete the run logs in GASTOWN_RUN_LOG_DIR last written more than ``older_than_days``
    ago (default GASTOWN_RUN_LOG_RETENTION_DAYS; 0 keeps everything), except those of runs
    still active. Logs of deleted runs and rigs go too. Returns what was deleted."""
    days = settings.GASTOWN_RUN_LOG_RETENTION_DAYS if older_than_days is None else older_than_days
    directory = Path(settings.GASTOWN_RUN_LOG_DIR)
    if days <= 0 or not directory.is_dir():
        return []
    cutoff = time.time() - days * 86400
    old = {}
    for path in directory.iterdir():
        match = _LOG_NAME.fullmatch(path.name)
        if match and path.is_file() and path.stat().st_mtime < cutoff:
            old[int(match[1])] = path
    active = set(
        AgentRun.objects.filter(pk__in=old, state__in=AgentRun.ACTIVE_STATES).values_list(
            "pk", flat=True
        )
    )
    deleted = []
    for run_id, path in sorted(old.items()):
        if run_id not in active:
            path.unlink(missing_ok=True)
            deleted.append(path)
    return deleted
