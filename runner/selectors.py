"""Agent runs: the reads."""

from pathlib import Path

from rigs.models import Rig
from runner.models import AgentRun

LOG_CHUNK_MAX = 256 * 1024
LOG_TAIL_DEFAULT = 16 * 1024


def runs_for_rig(rig: Rig | int, limit: int = 10) -> list[AgentRun]:
    return list(
        AgentRun.objects.filter(rig=rig).select_related("agent", "leg").order_by("-id")[:limit]
    )


def run_log_read(run: AgentRun, offset: int | None = None, limit: int = LOG_CHUNK_MAX) -> dict:
    """A chunk of a run's log: from `offset` (follow a live log), or its tail when no offset."""
    path = Path(run.log_path) if run.log_path else None
    size = path.stat().st_size if path and path.exists() else 0
    limit = max(1, min(limit, LOG_CHUNK_MAX))
    start = max(0, size - LOG_TAIL_DEFAULT) if offset is None else min(max(0, offset), size)
    data = b""
    if size and start < size:
        with open(path, "rb") as handle:
            handle.seek(start)
            data = handle.read(limit)
    return {
        "run": run.id,
        "state": run.state,
        "offset": start,
        "next_offset": start + len(data),
        "size": size,
        "text": data.decode("utf-8", "replace"),
        "complete": not run.is_active and start + len(data) >= size,
    }
