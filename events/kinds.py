"""Every kind of event, with the payload fields it carries: the one registry.

`event_append` refuses a kind that is not here, so a typo fails in the first test that runs the
code, and docs/architecture.md points here for "how to add an event kind": add a line, append it
in the service that makes the change, and (if the board shows it) let live.js refresh on it."""

from dataclasses import dataclass


@dataclass(frozen=True)
class EventKind:
    name: str
    about: str
    payload: tuple[str, ...]


# A new notice and the repeat of an unacknowledged one carry the same fields.
NOTIFICATION_PAYLOAD = (
    "notification",
    "rig",
    "kind",
    "severity",
    "summary",
    "action",
    "cascade",
    "depth",
    "occurrences",
    "state",
    "topic",
)

_KINDS = [
    # rigs (written by rigs' services)
    EventKind(
        "rig.state",
        "a rig moved state",
        ("rig", "slug", "from", "to", "reason", "progress", "label"),
    ),
    EventKind("rig.progress", "provisioning progress", ("rig", "progress", "label")),
    EventKind(
        "rig.branch",
        "a rig's branch moved (seen by a sync)",
        ("rig", "slug", "from", "to", "ahead", "behind", "files"),
    ),
    EventKind(
        "merge_request.state",
        "a merge request moved state (`forced` on creation: asked with force over open work)",
        ("merge_request", "from", "to", "forced"),
    ),
    EventKind(
        "merge_request.reviewed",
        "an operator approved a merge request's commit or asked for changes (its audit trail)",
        ("merge_request", "commit", "verdict", "by", "approvals", "required"),
    ),
    EventKind("rig.updated", "a rig's settings were edited", ("rig", "slug", "fields")),
    EventKind(
        "merge_request.updated",
        "a queued merge request was edited (its priority)",
        ("merge_request", "fields", "priority"),
    ),
    EventKind("repository.registered", "a repository was registered", ("repository", "name")),
    EventKind(
        "repository.updated",
        "a repository's settings were edited",
        ("repository", "name", "fields"),
    ),
    EventKind("agent.updated", "an agent's settings were edited", ("agent", "name", "fields")),
    EventKind(
        "agent.token", "an agent's token was rotated or revoked", ("agent", "name", "action")
    ),
    # convoys
    EventKind("convoy.created", "a convoy was planned", ("title", "slug", "legs")),
    EventKind("convoy.state", "a convoy moved state", ("title", "from", "to", "reason")),
    EventKind(
        "convoy.landing_queued",
        "a convoy's integration branch was queued",
        ("merge_request", "source", "target"),
    ),
    EventKind(
        "convoy.budget_reached",
        "a convoy reached its budget",
        ("title", "budget_usd", "spent_usd", "message"),
    ),
    EventKind("leg.added", "a leg was added to a convoy", ("leg", "key", "title", "depends_on")),
    EventKind("leg.state", "a leg moved state", ("leg", "key", "from", "to")),
    # beads
    EventKind("bead.created", "a bead was created", ("bead", "title", "priority")),
    EventKind("bead.updated", "a bead's fields were edited", ("bead", "title", "fields")),
    EventKind("bead.status", "a bead's status changed", ("bead", "title", "from", "to")),
    EventKind(
        "bead.claimed",
        "a bead was claimed (a lease until `lease_expires_at`, held by the agent's `run`)",
        ("bead", "title", "agent", "from", "to", "moved_to_rig", "run", "lease_expires_at"),
    ),
    EventKind("bead.dependency_added", "a dependency was added", ("bead", "depends_on", "type")),
    EventKind("bead.dependency_removed", "a dependency was removed", ("bead", "depends_on")),
    EventKind("beads.unblocked", "closing a bead unblocked others", ("rig", "by", "beads")),
    EventKind(
        "bead.claim_lapsed",
        "a claim ended without the bead being closed: its lease lapsed (no heartbeat) or its "
        "run ended; the bead is open again with no assignee (back in its pool if a claim took "
        "it from one), and a note says why",
        (
            "bead",
            "title",
            "agent",
            "run",
            "cause",
            "reason",
            "from",
            "to",
            "to_pool",
            "taken_by",
            "comment",
        ),
    ),
    EventKind(
        "bead.released",
        "a claim was given up: the bead is open again, with no assignee",
        ("bead", "title", "agent", "from", "to", "by", "to_pool"),
    ),
    EventKind("bead.commented", "a comment was added to a bead", ("bead", "comment", "author")),
    EventKind(
        "review.comment",
        "a review comment on a rig's change was added, answered or resolved",
        ("comment", "thread", "rig", "path", "line", "author", "state", "action"),
    ),
    EventKind(
        "rig.turn_ended",
        "a rig's agent ended its turn without a merge (escalated or deferred); the runner "
        "does not relaunch it until a person answers or launches it",
        ("rig", "slug", "status", "reason", "notification"),
    ),
    # notifications
    EventKind(
        "notification.new",
        "a rig was told something",
        NOTIFICATION_PAYLOAD,
    ),
    EventKind(
        "notification.repeated",
        "an unacknowledged notice was repeated",
        NOTIFICATION_PAYLOAD,
    ),
    EventKind(
        "notification.updated",
        "an open notice was updated in place (its cause changed)",
        NOTIFICATION_PAYLOAD,
    ),
    EventKind(
        "notification.resolved",
        "an open notice was resolved by what answered it",
        ("notification", "rig", "kind", "resolution"),
    ),
    EventKind("notification.acked", "a notification was acknowledged", ("notification",)),
    # agent runs
    EventKind(
        "run.state",
        "an agent run moved state",
        ("run", "rig", "attempt", "agent", "from", "to", "reason", "exit_code"),
    ),
    EventKind(
        "run.stopping",
        "an agent run was asked to stop",
        ("run", "rig", "attempt", "agent", "requested_by"),
    ),
    EventKind(
        "run.escalated", "an agent run needs a person", ("run", "rig", "attempt", "agent", "reason")
    ),
    EventKind(
        "run.usage", "an agent reported usage", ("run", "rig", "attempt", "convoy_spent_usd")
    ),
    EventKind("run.refused", "no agent was launched for a leg", ("rig", "leg", "agent", "reason")),
    # the installation
    EventKind(
        "installation.restored",
        "the installation was restored from a backup (`manage.py restore`): repositories, "
        "worktrees and run logs now live under this data dir",
        ("backup_created_at", "source_host", "repositories", "rigs_moved", "runs_adopted"),
    ),
    # budgets (runner/budgets.py)
    EventKind(
        "budget.changed",
        "a budget was set, changed or deleted",
        (
            "budget",
            "scope",
            "target",
            "window",
            "limit_usd",
            "limit_tokens",
            "max_agents",
            "by",
            "deleted",
        ),
    ),
    EventKind(
        "budget.level",
        "a budget's spend crossed 80% or 100% (or fell back under)",
        ("budget", "key", "label", "window", "from", "to", "spent_usd", "spent_tokens", "message"),
    ),
]

EVENT_KINDS: dict[str, EventKind] = {kind.name: kind for kind in _KINDS}


def kind_check(name: str) -> None:
    if name not in EVENT_KINDS:
        raise ValueError(f"unknown event kind '{name}': register it in events/kinds.py")


def kind_register(name: str, about: str, payload: tuple[str, ...] = ()) -> EventKind:
    """Register a kind at run time (tests; an extension app's ready())."""
    kind = EVENT_KINDS.setdefault(name, EventKind(name, about, payload))
    return kind
