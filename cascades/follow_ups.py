"""The conceptual merge: work a landed change creates elsewhere (docs, tests, deployment),
queued as beads `discovered-from` the merge request in the rig that owns the area."""

from typing import Any

from cascades.watch import (
    DEPLOY_PATTERNS,
    DOC_PATTERNS,
    TEST_PATTERNS,
    path_matches,
    rig_owns,
)
from convoys.models import Bead, Leg
from convoys.services import bead_create
from notifications.models import Notification
from notifications.services import notification_send
from rigs.landing import LandedChange
from rigs.models import Rig

K = Notification.Kind
SEV = Notification.Severity


def cascade_follow_ups(
    change: LandedChange,
    what: str,
    code_symbols: dict[str, list[str]],
    common: dict[str, Any],
    candidates: list[tuple[Rig, Leg | None]],
) -> list[Notification]:
    """The conceptual merge: work the landed change creates elsewhere, as beads
    `discovered-from` the merge request, in the rig that owns the area."""
    primary = common["source_merge_request"]
    if primary is None:
        return []
    # Only a rig with a role or a scope can own an area.
    candidates = [(r, leg) for r, leg in candidates if r.role or r.scope or (leg and leg.scope)]
    if not candidates:
        return []
    tests_changed = any(path_matches(p, TEST_PATTERNS) for p in change.paths)
    deploy_changed = [p for p in change.paths if path_matches(p, DEPLOY_PATTERNS)]
    names = sorted({s for symbols in code_symbols.values() for s in symbols})
    work = []
    if names:
        work.append(
            (
                "docs",
                DOC_PATTERNS,
                f"Update the docs for {', '.join(names[:8])}",
                "The public interface changed in " + ", ".join(sorted(code_symbols)),
            )
        )
    if code_symbols and not tests_changed:
        work.append(
            (
                "tests",
                TEST_PATTERNS,
                "Add tests for " + ", ".join(names[:8] or sorted(code_symbols)[:5]),
                "Code changed without a test change: " + ", ".join(sorted(code_symbols)),
            )
        )
    if deploy_changed:
        work.append(
            (
                "deploy",
                DEPLOY_PATTERNS,
                "Review deployment change in " + ", ".join(deploy_changed[:5]),
                f"{what} touched deployment files you own.",
            )
        )
    sent = []
    for role, patterns, title, description in work:
        owner = next(((r, leg) for r, leg in candidates if rig_owns(r, leg, role, patterns)), None)
        if owner is None:
            continue
        rig, leg = owner
        exists = Bead.objects.filter(
            rig=rig, discovered_from_merge_request=primary, title=title
        ).exists()
        if exists:
            continue
        bead = bead_create(
            rig=rig,
            leg=leg,
            title=title,
            description=f"{description}\n\nLanded in {change.range} ({what}).",
            priority=1,
            type="task",
            labels=["follow-up", role],
            discovered_from_merge_request=primary,
        )
        note = notification_send(
            rig=rig,
            kind=K.ASSIGNED,
            severity=SEV.WARNING,
            summary=f"Follow-up work for you: {title}",
            action=f"Claim {bead.short_id} (gt claim {bead.short_id}) when you can.",
            changes={"bead": bead.short_id, "range": change.range},
            convoy_id=leg.convoy_id if leg else None,
            **common,
        )
        if note is not None:
            sent.append(note)
    return sent
