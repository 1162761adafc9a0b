"""What an agent is told about itself: its overview (`GET me/`) and its briefing
(`GET me/prime/`, the text an LLM agent reads at the start of a session).

Reads only: the rules come from the selectors (`rigs_current_legs`, `rigs_finished_work`,
`merge_target_for_rig`, `convoy_rollup`, `beads_ready`, `rigs.selectors.rig_positions`). Head,
ahead and behind are read from git when asked (else the last sync's, saying how old they are);
a rig whose leg landed is told so first, and to stop."""

from django.db.models import Case, Count, When
from django.utils import timezone

from common.errors import Refusal
from convoys.models import Bead, Convoy, Leg, ReviewComment
from convoys.selectors import (
    FinishedWork,
    beads_ready,
    convoy_rollup,
    landed_text,
    merge_target_for_rig,
    rigs_current_legs,
    rigs_finished_work,
)
from notifications.models import ACTION_SEVERITIES, Notification
from rigs.models import Agent, Rig
from rigs.selectors import RigPosition, rig_positions
from rigs.serializers import AgentSerializer

PRIME_BEADS = 10
PRIME_NOTES = 6
PRIME_ACCEPTANCE = 8  # acceptance items of the leg; the rest are counted
PRIME_REVIEWS = 5  # open review comments shown (the rest: `gt review`)


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


def _finished_row(finished: FinishedWork | None) -> dict | None:
    if finished is None:
        return None
    leg, mr = finished.leg, finished.merge_request
    return {
        "landed": finished.landed,
        "leg": leg.id if leg else None,
        "leg_key": leg.key if leg else None,
        "leg_state": leg.state if leg else None,
        "convoy": leg.convoy_id if leg else None,
        "convoy_state": leg.convoy.state if leg else None,
        "merge_request": mr.id if mr else None,
        "merge_commit": finished.commit,
        "text": finished.text(),
    }


def _dirty_as_of(rig: Rig) -> str:
    return RigPosition("", 0, 0, rig.last_synced_at, False).as_of


def _overview(agent: Agent) -> tuple[dict, dict[int, Rig], dict[int, FinishedWork]]:
    rigs = list(
        Rig.objects.filter(agent=agent)
        .exclude(state=Rig.State.ARCHIVED)
        .select_related("repository")
        .order_by("id")
    )
    legs = rigs_current_legs([rig.id for rig in rigs], dependencies=False) if rigs else {}
    finished = rigs_finished_work(rigs, legs) if rigs else {}
    positions = rig_positions(rigs)  # from git now (else the last sync's): no query
    unacked = dict(
        Notification.objects.filter(rig__in=rigs, state=Notification.State.OPEN)
        .values_list("rig")
        .annotate(n=Count("id"))
        .values_list("rig", "n")
    )
    rows = []
    for rig in rigs:
        leg = legs.get(rig.id)
        target = merge_target_for_rig(rig, leg)
        position = positions[rig.id]
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
                "head_commit": position.head,
                "ahead": position.ahead,
                "behind": position.behind,
                "counts_fresh": position.fresh,
                "counts_as_of": position.as_of,
                "dirty": rig.dirty,
                "dirty_as_of": _dirty_as_of(rig),
                "last_synced_at": rig.last_synced_at,
                "work_finished": _finished_row(finished.get(rig.id)),
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
    return overview, {rig.id: rig for rig in rigs}, finished


def agent_overview(agent: Agent) -> dict:
    """The agent, its rigs (not archived) with their current legs, head and ahead/behind (read
    from git now), whether their work is finished, and unacked counts: 3-5 queries."""
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
    working = [r for r in live if not r["work_finished"]] or live  # a finished rig comes last
    return next((r for r in working if r["assignment"]), working[0] if working else None)


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
    if leg_row["description"]:
        lines.append(f"Description: {_cut(leg_row['description'], 400)}")
    acceptance = leg_row["acceptance"]
    if acceptance:
        lines.append("Acceptance (each must hold before `gt done`):")
        lines += [f"- [ ] {_cut(item, 100)}" for item in acceptance[:PRIME_ACCEPTANCE]]
        if len(acceptance) > PRIME_ACCEPTANCE:
            more = len(acceptance) - PRIME_ACCEPTANCE
            lines.append(f"- … {more} more (`gt convoy show {convoy.id} --json`)")
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
    # The current state of each open notice, what asks for an action first.
    notes = list(
        Notification.objects.filter(rig=rig, state=Notification.State.OPEN)
        .annotate(urgent=Case(When(severity__in=ACTION_SEVERITIES, then=0), default=1))
        .order_by("urgent", "-updated_at", "-id")[:PRIME_NOTES]
    )
    if notes:
        lines.append(f"## Open notices ({unacked}; what to act on first)")
        for note in notes:
            updated = (
                f", updated {note.updated_at:%H:%M}" if note.topic and note.occurrences > 1 else ""
            )
            lines.append(
                f"- #{note.id} [{note.severity} {note.kind}{updated}] {_cut(note.summary, 120)}"
            )
            if note.action:
                lines.append(f"  do: {_cut(note.action, 140)}")
        lines.append("")
    return lines, ready


def _review_lines(rig: Rig) -> list[str]:
    """The open review comments on the rig's change (a person's, from the board's diff view):
    where, the line's text then, the comment. One query."""
    threads = list(
        ReviewComment.objects.filter(
            rig=rig, reply_to__isnull=True, state=ReviewComment.State.OPEN
        ).order_by("created_at", "id")[: PRIME_REVIEWS + 1]
    )
    if not threads:
        return []
    more = " (more: `gt review`)" if len(threads) > PRIME_REVIEWS else ""
    lines = [f"## Open review comments on your change{more}"]
    for c in threads[:PRIME_REVIEWS]:
        lines.append(f"- #{c.id} {c.where} - {c.author}: {_cut(c.text, 160)}")
        if c.excerpt:
            lines.append(f"  line then: {_cut(c.excerpt.strip(), 100)}")
    lines += [
        '  do: fix it and commit, then `gt review resolve ID`; or answer `gt review reply ID "…"`',
        "",
    ]
    return lines


def _dirty_line(rig: Rig, row: dict) -> str:
    """Uncommitted changes are the last sync's (a `git status` per briefing is not worth it)."""
    if rig.last_synced_at is None:
        return "- uncommitted changes: not read yet (never synced; `gt sync` reads them)"
    what = "uncommitted changes in the worktree" if rig.dirty else "no uncommitted changes"
    return f"- {what} ({row['dirty_as_of']})"


def _other_rigs_lines(rig: Rig, overview: dict) -> list[str]:
    others = [r for r in overview["rigs"] if r["id"] != rig.id]
    if not others:
        return []
    listed = ", ".join(f"{r['slug']} (id {r['id']}, {r['state']})" for r in others[:5])
    return [
        f"- your other rigs: {listed}; gt speaks for the rig whose worktree you stand in "
        "(or GT_RIG=<id or slug>)"
    ]


def _finished_lines(agent: Agent, rig: Rig, finished: FinishedWork, overview: dict) -> list[str]:
    """The briefing of a rig whose work is finished: that first, and to stop."""
    if finished.leg is not None:
        what = f"Your {finished.text()}"
    else:
        what = f"Your branch `{rig.branch}` landed{landed_text(finished.merge_request)}"
    return [
        "## Stop: your work in this rig is finished",
        f"{what}. Your work in this rig is finished: stop here.",
        f"Do not commit, claim beads or run `gt done` in rig `{rig.slug}` again: there is "
        "nothing more to land from it. Exit now.",
        "",
        f"You are agent `{agent.name}`; rig `{rig.slug}` (id {rig.id}) on repository "
        f"`{rig.repository.name}` is {rig.state} (branch `{rig.branch}`).",
        *_other_rigs_lines(rig, overview),
    ]


def prime_text(agent: Agent, wanted_rig: str | None = None) -> str:
    """The briefing: who, which rig, which leg, what is ready, what is unread, what to type.
    Bounded: at most 10 ready beads and 6 notifications, texts cut (well under ~1,500 tokens).
    A rig asked for by id or slug that is not the agent's is a 404 refusal."""
    overview, rigs, finished = _overview(agent)
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
    if rig.id in finished:
        return "\n".join(lines + _finished_lines(agent, rig, finished[rig.id], overview)) + "\n"
    target = row["merge_target"]
    lines += [
        f"You are agent `{agent.name}`, working in rig `{rig.slug}` (id {rig.id}) on repository "
        f"`{rig.repository.name}`.",
        f"- state: {rig.state}; branch `{rig.branch}`; worktree `{rig.worktree_path}`",
        f"- commits: {row['ahead']} ahead, {row['behind']} behind "
        f"`{rig.repository.target_branch}` (head {row['head_commit'][:10] or '-'}, "
        f"{row['counts_as_of']})",
        _dirty_line(rig, row),
        f"- merge target: `{target}` (`gt done` asks to land your branch there)",
    ]
    if rig.scope:
        lines.append(f"- your scope: {', '.join(rig.scope[:10])}")
    lines += [*_other_rigs_lines(rig, overview), ""]
    if row["assignment"]:
        lines += _leg_lines(row["assignment"])
    work, ready = _work_lines(rig, row["unacked_notifications"])
    lines += work
    lines += _review_lines(rig)
    first = ready[0].short_id if ready else "ID"
    lines += [
        "## Next steps (set GT_URL and GT_TOKEN; add --json for machine-readable output)",
        f"- gt claim {first}            start a ready bead (409 if someone holds it)",
        "- gt show ID                 a bead's details, dependencies and why it is not ready",
        '- gt close ID -r "what"      when it is done; prints the beads it unblocked',
        '- gt create "title" --discovered-from ID [-p 0-4] [--blocks ID]   work you found',
        "- gt dep add A B             A cannot start until B closes",
        "- gt inbox / gt ack ID|--all read and acknowledge notifications",
        '- gt review / gt review reply ID "…" / gt review resolve ID   comments on your change',
        '- gt send RIG "text" / gt escalate "question"   tell another rig / ask a person',
        "- gt heartbeat               every few minutes while you work (else: stalled, and "
        "your claims lapse)",
        "- gt sync                    after committing: refresh changed files, uncommitted state",
        f"- gt done                    asks to merge `{rig.branch}` into `{target}`; refused "
        "while your leg has open beads or the worktree uncommitted changes (close, commit); "
        '`gt done --status escalated|deferred "why"` stops without a merge',
        "- gt status / gt prime       where things stand",
    ]
    return "\n".join(lines) + "\n"
