"""Agent runs and budgets: the reads (what budgets have spent: runner/limits.py)."""

from pathlib import Path

from django.db.models import Q, QuerySet

from convoys.models import Leg
from rigs.models import Agent, Rig
from runner.models import AgentRun, Budget

LOG_CHUNK_MAX = 256 * 1024
LOG_TAIL_DEFAULT = 16 * 1024


def claim_holder_run(agent_id: int, rig_id: int) -> int | None:
    """The run that holds the claims `agent_id` makes in `rig_id`: its live (starting or
    running) run there, if any. Registered with `convoys.services.leases.CLAIM_RUN_FINDERS`."""
    return (
        AgentRun.objects.filter(agent_id=agent_id, rig_id=rig_id, state__in=AgentRun.PROCESS_STATES)
        .values_list("pk", flat=True)
        .first()
    )


def run_stop_by(run_id: int):
    """When a run asked to stop after its step must stop at the latest (None: not asked)."""
    return AgentRun.objects.filter(pk=run_id).values_list("stop_by", flat=True).first()


def runs_for_rig(rig: Rig | int, limit: int = 10) -> list[AgentRun]:
    return list(
        AgentRun.objects.filter(rig=rig).select_related("agent", "leg").order_by("-id")[:limit]
    )


def run_log_read(run: AgentRun, offset: int | None = None, limit: int = LOG_CHUNK_MAX) -> dict:
    """A chunk of a run's log: from `offset` (follow a live log), or its tail when no offset."""
    path = Path(run.log_path) if run.log_path else None
    size = path.stat().st_size if path and path.exists() else 0
    limit = max(4, min(limit, LOG_CHUNK_MAX))  # room for one whole UTF-8 character
    start = max(0, size - LOG_TAIL_DEFAULT) if offset is None else min(max(0, offset), size)
    data = b""
    if size and start < size:
        with open(path, "rb") as handle:
            handle.seek(start)
            data = handle.read(limit)
    if offset is None:  # a tail may begin inside a character: start at the next one
        skip = _continuation_bytes(data)
        data, start = data[skip:], start + skip
    data = data[: len(data) - _incomplete_tail(data)]  # the rest comes with the next read
    return {
        "run": run.id,
        "state": run.state,
        "offset": start,
        "next_offset": start + len(data),
        "size": size,
        "text": data.decode("utf-8", "replace"),
        "complete": not run.is_active and start + len(data) >= size,
    }


def _continuation_bytes(data: bytes) -> int:
    n = 0
    while n < min(3, len(data)) and data[n] & 0xC0 == 0x80:
        n += 1
    return n


def _incomplete_tail(data: bytes) -> int:
    """How many bytes at the end are the start of a UTF-8 character that is cut off."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # the lead byte (or ASCII)
            needed = 2 if byte >= 0xC0 else 1
            needed = 3 if byte >= 0xE0 else needed
            needed = 4 if byte >= 0xF0 else needed
            return back if needed > back else 0
    return 0


def budgets_visible(agent: Agent | None) -> QuerySet[Budget]:
    """Budgets, newest last: all for people with a role; for an agent, those over its own
    runs (on itself, on the repositories it has rigs in, on the convoys of its rigs' legs)."""
    budgets = Budget.objects.select_related("agent", "repository", "convoy").order_by("id")
    if agent is None:
        return budgets
    repositories = Rig.objects.filter(agent=agent).values("repository_id")
    convoys = Leg.objects.filter(rig__agent=agent).values("convoy_id")
    return budgets.filter(
        Q(agent=agent) | Q(repository_id__in=repositories) | Q(convoy_id__in=convoys)
    )
