"""What the runner decides from data alone (no writes): which command an agent runs, in which
rig states an agent can run, what asks for an agent, how a convoy's own budget is told.
Services, operations and the board all ask here (budgets: runner/limits.py)."""

import signal

from django.db.models import Q

from common import process
from convoys.models import Convoy, Leg
from convoys.services.coordination import turn_topic
from notifications.models import ACTION_SEVERITIES, Notification
from rigs.models import Agent, Repository, Rig
from runner import presets

# Preset commands per runtime; an agent's own `runtime_command` wins. The prompt comes from
# `gt prime` (the agent's briefing); data never gets pasted into the command text. Claude Code
# and Codex: runner/presets.py (their allowed tools come from the repository's commands).
RUNTIME_PRESETS = {
    Agent.Runtime.SCRIPTED: "gastown-agent",
    Agent.Runtime.CLAUDE: presets.claude_command(),
    Agent.Runtime.CODEX: presets.codex_command(sandboxed=True),
    Agent.Runtime.CUSTOM: "",
}
MAX_BACKOFF_SECONDS = 300
# Rig states in which an agent can work (its worktree exists).
RUNNABLE_RIG_STATES = (
    Rig.State.READY,
    Rig.State.WORKING,
    Rig.State.STALLED,
    Rig.State.MERGING,
    Rig.State.MERGED,
)
# Rig states that mean "not yet": the run waits in the queue.
PENDING_RIG_STATES = (Rig.State.REQUESTED, Rig.State.PROVISIONING)
# A leg in these states needs its agent: not waiting for dependencies, not in the merge queue,
# not done. An agent that exits while its leg is here is launched again to go on.
LEG_NEEDS_AGENT = (Leg.State.READY, Leg.State.WORKING)
# Notifications that ask a rig's agent to act: an idle agent is launched to act on them.
WAKE_REQUESTER = "runner:wake"
WAKE_KINDS = frozenset(
    {
        Notification.Kind.REBASE_NEEDED,
        Notification.Kind.INTERFACE_CHANGED,
        Notification.Kind.DEPENDENCIES_CHANGED,
        Notification.Kind.GATE_FAILED,
        Notification.Kind.MERGE_CONFLICTED,
    }
)


def agent_runtime_command(agent: Agent, repository: Repository | None = None) -> str:
    """What a run of ``agent`` runs: its own command, else its runtime's preset (for Claude Code
    with the repository's gate and setup commands allowed; for Codex, as the sandbox asks)."""
    if agent.runtime_command.strip():
        return agent.runtime_command.strip()
    preset = presets.preset_command(
        agent.runtime,
        gate_command=repository.gate_command if repository is not None else "",
        setup_command=repository.setup_command if repository is not None else "",
        sandboxed=process.sandbox_mode() == "bwrap",
    )
    return (preset if preset is not None else RUNTIME_PRESETS.get(agent.runtime, "")).strip()


def agent_launchable(agent: Agent | None) -> bool:
    """The runner launches only agents it can run; the others call in by themselves."""
    return agent is not None and agent.is_active and bool(agent_runtime_command(agent))


def convoy_budget_message(convoy: Convoy) -> str:
    return (
        f"convoy '{convoy.title}' reached its budget: ${convoy.spent_usd:.2f} spent of "
        f"${convoy.budget_usd:.2f}; no new agent runs are launched for it"
    )


def leg_needs_agent(leg: Leg) -> bool:
    return leg.state in LEG_NEEDS_AGENT and leg.convoy.state in Convoy.ACTIVE_STATES


def exit_description(exit_code: int | None) -> str:
    if exit_code is None:
        return "ended without an exit code"
    if exit_code < 0:
        try:
            return f"killed by {signal.Signals(-exit_code).name}"
        except ValueError:
            return f"killed by signal {-exit_code}"
    return f"exited with code {exit_code}"


def turn_ended(rig_id: int, leg_id: int | None) -> Notification | None:
    """The open "turn ended" notice of a rig for a leg (`gt done --status escalated|deferred`),
    or None. While it is open the runner neither restarts nor wakes the rig's agent for that
    leg: a person answers it or launches the agent."""
    return (
        Notification.objects.filter(
            rig_id=rig_id, topic=turn_topic(leg_id), state=Notification.State.OPEN
        )
        .order_by("-id")
        .first()
    )


def notice_wakes(kind: str, severity: str) -> bool:
    """Does a notice ask the rig's idle agent to act now? The WAKE_KINDS, and a message that
    asks for an action (an answer to the agent's escalation: warning), not a peer's note."""
    return kind in WAKE_KINDS or (
        kind == Notification.Kind.MESSAGE and severity in ACTION_SEVERITIES
    )


# The same rule as a query: the open notices that wake their rig's idle agent.
WAKING = Q(kind__in=WAKE_KINDS) | Q(kind=Notification.Kind.MESSAGE, severity__in=ACTION_SEVERITIES)
