"""What an agent is told about itself: its overview (`GET me/`) and its briefing
(`GET me/prime/`, the text an LLM agent reads at the start of a session).

Reads only: the rules come from the selectors (`rigs_current_legs`, `merge_target_for_rig`,
`convoy_rollup`, `beads_ready`)."""

from django.db.models import Count
from django.utils import timezone

from common.errors import Refusal
from convoys.models import Bead, Convoy, Leg
from convoys.selectors import beads_ready, convoy_rollup, merge_target_for_rig, rigs_current_legs
from notifications.models import Notification
from rigs.models import Agent, Rig
from rigs.serializers import AgentSerializer

PRIME_BEADS = 10
PRIME_NOTES = 6


def _assignment(rig: Rig, leg: Leg | None, target: str) -> dict | None:
    if leg is None:
        return None
    return {
        "rig": rig.id,
        "leg": leg.id,
        "leg_key": leg.key,
        "leg_title": leg.title,
        "leg_state": leg.state,
        "convoy": leg.convoy_id,
        "convoy_title": leg.convoy.title,
        "convoy_state": leg.convoy.state,
        "merge_target": target,
    }


def _overview(agent: Agent) -> tuple[dict, dict[int, Rig]]:
    rigs = list(
        Rig.objects.filter(agent=agent)
        .exclude(state=Rig.State.ARCHIVED)
        .select_related("repository")
        .order_by("id")
    )
    legs = rigs_current_legs([rig.id for rig in rigs], dependencies=False) if rigs else {}
    unacked = dict(
        Notification.objects.filter(rig__in=rigs, acked_at__isnull=True)
        .values_list("rig")
        .annotate(n=Count("id"))
        .values_list("rig", "n")
    )
    rows = []
    for rig in rigs:
        leg = legs.get(rig.id)
        target = merge_target_for_rig(rig, leg)
        rows.append(
            {
                "id": rig.id,
                "slug": rig.slug,
                "repository": rig.repository_id,
                "repository_name": rig.repository.name,
                "state": rig.state,
                "branch": rig.branch,
                "worktree_path": rig.worktree_path,
                "merge_target": target,
                "ahead": rig.ahead,
                "behind": rig.behind,
                "dirty": rig.dirty,
                "assignment": _assignment(rig, leg, target),
                "unacked_notifications": unacked.get(rig.id, 0),
            }
        )
    overview = {
        "kind": "agent",
        "agent": AgentSerializer(agent).data,
        "user": None,
        "rigs": rows,
        "assignment": next((r["assignment"] for r in rows if r["assignment"]), None),
        "unread_notifications": sum(unacked.values()),
    }
    return overview, {rig.id: rig for rig in rigs}


def agent_overview(agent: Agent) -> dict:
    """The agent, its rigs (not archived) with their current legs and unacked counts: 3 queries."""
    return _overview(agent)[0]


def _cut(text: str, n: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _pick_rig(rows: list[dict], wanted: str | None) -> dict | None:
    if wanted:
        for row in rows:
            if str(row["id"]) == wanted or row["slug"] == wanted:
                return row
        raise Refusal(f"you have no rig '{wanted}' (by id or slug).", code="not_found", status=404)
    live = [r for r in rows if r["state"] in Rig.LIVE_STATES] or rows
    return next((r for r in live if r["assignment"]), live[0] if live else None)


def _leg_lines(assignment: dict) -> list[str]:
    convoy = Convoy.objects.get(pk=assignment["convoy"])
    rollup = convoy_rollup(convoy)
    leg_row = next(leg for leg in rollup["legs"] if leg["id"] == assignment["leg"])
    progress = rollup["progress"]
    lines = [
        "## Your leg",
        f"Leg `{leg_row['key']}`: {_cut(leg_row['title'], 120)} ({leg_row['state']}), "
        f'wave {leg_row["wave"]} of convoy #{convoy.id} "{_cut(convoy.title, 80)}" '
        f"({convoy.state}, {progress['landed']}/{progress['total']} legs landed).",
    ]
    if leg_row["depends_on"]:
        states = {leg["key"]: leg["state"] for leg in rollup["legs"]}
        deps = ", ".join(f"{k} ({states.get(k, '?')})" for k in leg_row["depends_on"])
        lines.append(f"Depends on: {deps}.")
    blocked = next((b for b in rollup["blocked"] if b["id"] == leg_row["id"]), None)
    if blocked:
        lines.append(f"Blocked: {'; '.join(blocked['reasons'])}.")
    description = Leg.objects.filter(pk=leg_row["id"]).values_list("description", flat=True)
    if description and description[0]:
        lines.append(f"Description: {_cut(description[0], 400)}")
    return [*lines, ""]


def _work_lines(rig: Rig, unacked: int) -> tuple[list[str], list[Bead]]:
    """In progress, ready (most urgent first) and unacked notifications."""
    lines = []
    mine = list(
        Bead.objects.filter(rig=rig, status=Bead.Status.IN_PROGRESS).order_by(
            "priority", "claimed_at"
        )[:5]
    )
    if mine:
        lines.append("## In progress")
        lines += [f"- {b.short_id} [P{b.priority} {b.type}] {_cut(b.title, 100)}" for b in mine]
        lines.append("")
    ready_ids = list(beads_ready(rig=rig).values_list("pk", flat=True)[: PRIME_BEADS + 1])
    ready = list(Bead.objects.filter(pk__in=ready_ids[:PRIME_BEADS]).order_by("priority", "id"))
    ready.sort(key=lambda b: ready_ids.index(b.pk))
    more = " (more: `gt ready`)" if len(ready_ids) > PRIME_BEADS else ""
    lines.append(f"## Ready beads, most urgent first{more}")
    if ready:
        lines += [f"- {b.short_id} [P{b.priority} {b.type}] {_cut(b.title, 80)}" for b in ready]
    else:
        lines.append("- none ready. `gt show ID` explains why a bead is not ready.")
    lines.append("")
    notes = list(
        Notification.objects.filter(rig=rig, acked_at__isnull=True).order_by("-created_at", "-id")[
            :PRIME_NOTES
        ]
    )
    if notes:
        lines.append(f"## Unacked notifications ({unacked}; newest first)")
        for note in notes:
            times = f" x{note.occurrences}" if note.occurrences > 1 else ""
            lines.append(
                f"- #{note.id} [{note.severity} {note.kind}{times}] {_cut(note.summary, 120)}"
            )
            if note.action:
                lines.append(f"  do: {_cut(note.action, 140)}")
        lines.append("")
    return lines, ready


def prime_text(agent: Agent, wanted_rig: str | None = None) -> str:
    """The briefing: who, which rig, which leg, what is ready, what is unread, what to type.
    Bounded: at most 10 ready beads and 6 notifications, texts cut (well under ~1,500 tokens).
    A rig asked for by id or slug that is not the agent's is a 404 refusal."""
    overview, rigs = _overview(agent)
    row = _pick_rig(overview["rigs"], wanted_rig)
    now = timezone.now().strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# Gas Town briefing for agent {agent.name} ({now})", ""]
    if row is None:
        lines += [
            f"You are agent `{agent.name}`. You have no rig yet, so there is nothing to work on.",
            "An operator assigns you a leg of a convoy (a rig is provisioned for it), or you",
            'request a rig: `POST /api/v1/rigs/ {"slug": ..., "repository": ...}`.',
            "",
            "Commands: `gt whoami` (your rigs), `gt convoy list`, `gt prime` again later.",
        ]
        return "\n".join(lines) + "\n"
    rig = rigs[row["id"]]
    target = row["merge_target"]
    lines += [
        f"You are agent `{agent.name}`, working in rig `{rig.slug}` (id {rig.id}) on repository "
        f"`{rig.repository.name}`.",
        f"- state: {rig.state}; branch `{rig.branch}`; worktree `{rig.worktree_path}`",
        f"- commits: {rig.ahead} ahead, {rig.behind} behind `{rig.repository.target_branch}`"
        + ("; uncommitted changes" if rig.dirty else "")
        + f" (head {rig.head_commit[:10] or '-'}, as of the last sync)",
        f"- merge target: `{target}` (`gt done` asks to land your branch there)",
    ]
    if rig.scope:
        lines.append(f"- your scope: {', '.join(rig.scope[:10])}")
    others = [r for r in overview["rigs"] if r["id"] != rig.id]
    if others:
        listed = ", ".join(f"{r['slug']} (id {r['id']}, {r['state']})" for r in others[:5])
        lines.append(f"- your other rigs: {listed}; choose with GT_RIG=<id or slug>")
    lines.append("")
    if row["assignment"]:
        lines += _leg_lines(row["assignment"])
    work, ready = _work_lines(rig, row["unacked_notifications"])
    lines += work
    first = ready[0].short_id if ready else "ID"
    lines += [
        "## Next steps (set GT_URL and GT_TOKEN; add --json for machine-readable output)",
        f"- gt claim {first}            start a ready bead (409 if someone holds it)",
        "- gt show ID                 a bead's details, dependencies and why it is not ready",
        '- gt close ID -r "what"      when it is done; prints the beads it unblocked',
        '- gt create "title" --discovered-from ID [-p 0-4] [--blocks ID]   work you found',
        "- gt dep add A B             A cannot start until B closes",
        "- gt inbox / gt ack ID|--all read and acknowledge notifications",
        "- gt heartbeat               every few minutes while you work (else: stalled)",
        "- gt sync                    after committing: refresh ahead/behind and changed files",
        f"- gt done                    commit first; asks to merge `{rig.branch}` into `{target}`",
        "- gt status / gt prime       where things stand",
    ]
    return "\n".join(lines) + "\n"
