"""Trigger 1, a merge landed: per other live rig on that target, a conflict forecast or "base
moved" (an idle, clean rig is rebased first when the repository allows it), "interface
changed" for watched paths, "dependencies changed" for manifests; plus follow-up beads where
the conceptual merge belongs (docs, tests, deployment).

Runs in a Celery task (`cascades.tasks.cascade_merge_landed`), enqueued by the landing's
transaction for after its commit (`cascade_merge_landed_later`). The landed change is read
through `rigs.landing` (three reads, plain data) and rebases are asked of `rigs.operations`;
this module decides who is told what, then writes every notification in one transaction.
"""

import uuid
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from cascades import tasks
from cascades.follow_ups import cascade_follow_ups
from cascades.watch import (
    CODE_SUFFIXES,
    MANIFEST_PATTERNS,
    TEST_PATTERNS,
    path_matches,
    rig_watch_patterns,
)
from convoys.models import Leg
from convoys.selectors import merge_target_for_rig, rigs_current_legs
from notifications.models import Notification
from notifications.services import notifications_send_many
from rigs import landing, operations
from rigs.landing import LandedChange
from rigs.models import MergeRequest, Repository, Rig

K = Notification.Kind
SEV = Notification.Severity

# Notifications that ask a rig to change its code; its next landing answers them.
ANSWERABLE_KINDS = [K.INTERFACE_CHANGED, K.DEPENDENCIES_CHANGED, K.ASSIGNED]
# Rig states in which nobody is at work in the worktree, so Gas Town may rebase it.
REBASABLE_STATES = (Rig.State.READY, Rig.State.MERGED)


def _cascade_of(rigs: list[Rig]) -> tuple[uuid.UUID, int]:
    """A change made in answer to a notification continues that cascade one level deeper."""
    answered = (
        Notification.objects.filter(rig__in=rigs, kind__in=ANSWERABLE_KINDS)
        .order_by("-created_at", "-id")
        .first()
    )
    if answered is not None and _since_last_landing(answered):
        return answered.cascade, answered.depth + 1
    return uuid.uuid4(), 0


def _since_last_landing(notification: Notification) -> bool:
    """The notification arrived while the rig worked on the change that just landed (after its
    previous landing, if any)."""
    previous = (
        MergeRequest.objects.filter(rig_id=notification.rig_id, state=MergeRequest.State.MERGED)
        .order_by("-finished_at")
        .values_list("finished_at", flat=True)[1:2]
    )
    last = next(iter(previous), None)
    return last is None or notification.created_at > last


def _describe(sources: list[Rig], target_branch: str) -> str:
    names = ", ".join(sorted({r.slug for r in sources})) or "a branch"
    return f"{names} landed on {target_branch}"


def _live_rigs_with_legs(
    repository: Repository, sources: list[Rig]
) -> list[tuple[Rig, Leg | None]]:
    """Every other live rig on the repository with its current leg (two queries in all)."""
    rigs = list(
        Rig.objects.filter(repository=repository, state__in=Rig.LIVE_STATES)
        .exclude(id__in={r.id for r in sources})
        .select_related("repository")
        .order_by("id")
    )
    legs = rigs_current_legs(r.id for r in rigs)
    return [(rig, legs.get(rig.id)) for rig in rigs]


def _rebase_idle(repository: Repository, rig: Rig, onto: str) -> bool:
    """Keep an idle, clean rig current for its agent (when the repository allows it): asked of
    the rig's own operation, which takes the rig's lock and records the sync."""
    if not repository.auto_rebase or rig.state not in REBASABLE_STATES or rig.dirty:
        return False
    return operations.rig_rebase_run(rig=rig, onto=onto)


@dataclass
class RigImpact:
    """What one landing means for one rig (read from git before any write)."""

    rig: Rig
    leg: Leg | None
    conflicts: list[str]
    behind: int
    watched: list[str]
    rebased: bool
    excerpt: str


def _impact_notices(
    change: LandedChange, what: str, impact: RigImpact, manifests: list[str]
) -> list[dict[str, Any]]:
    """The notifications (as `notification_send` arguments) one rig gets for one landing."""
    rig, new_tip, target = impact.rig, change.new_tip, change.target_branch
    notices = []
    if impact.conflicts:
        files = ", ".join(impact.conflicts[:5])
        notices.append(
            {
                "kind": K.REBASE_NEEDED,
                "severity": SEV.WARNING,
                "summary": f"Rebase needed: {what}; it conflicts with your work in {files}",
                "action": f"Rebase {rig.branch} onto {target} ({new_tip[:12]}) now and resolve the "
                f"conflicts in {', '.join(impact.conflicts)}.",
                "changes": {
                    "conflicts": impact.conflicts,
                    "target_commit": new_tip,
                    "behind": impact.behind,
                    "range": change.range,
                },
            }
        )
    elif impact.rebased:
        notices.append(
            {
                "kind": K.BASE_MOVED,
                "severity": SEV.INFO,
                "summary": f"Your base moved ({what}); Gas Town rebased your idle rig onto "
                f"{new_tip[:12]}",
                "action": "Nothing to do: your worktree already has the new base.",
                "changes": {"behind": 0, "rebased_onto": new_tip, "range": change.range},
            }
        )
    else:
        notices.append(
            {
                "kind": K.BASE_MOVED,
                "severity": SEV.INFO,
                "summary": f"Your base moved: {what}; you are {impact.behind} commit(s) behind",
                "action": f"Rebase onto {target} ({new_tip[:12]}) when convenient.",
                "changes": {
                    "behind": impact.behind,
                    "target_commit": new_tip,
                    "range": change.range,
                },
            }
        )
    if impact.watched:
        symbols = sorted({s for p in impact.watched for s in change.symbols.get(p, [])})
        named = f" ({', '.join(symbols[:6])})" if symbols else ""
        notices.append(
            {
                "kind": K.INTERFACE_CHANGED,
                "severity": SEV.WARNING,
                "summary": f"Interface changed: {', '.join(impact.watched[:5])}{named}",
                "action": "Update your usage of the changed interface"
                + (f": {', '.join(symbols)}" if symbols else "")
                + ".",
                "changes": {
                    "files": change.file_stats(impact.watched),
                    "symbols": {p: change.symbols.get(p, []) for p in impact.watched},
                    "excerpt": impact.excerpt,
                    "range": change.range,
                },
            }
        )
    if manifests:
        notices.append(
            {
                "kind": K.DEPENDENCIES_CHANGED,
                "severity": SEV.WARNING,
                "summary": f"Dependencies changed: {', '.join(manifests)}; reinstall",
                "action": "Rebase, then reinstall dependencies (for example the repository's setup "
                "command) before running tests.",
                "changes": {"files": change.file_stats(manifests), "range": change.range},
            }
        )
    return notices


def cascade_merge_landed_later(
    *,
    merge_requests: list[MergeRequest],
    repository: Repository,
    target_branch: str,
    old_tip: str | None,
    new_tip: str | None,
) -> None:
    """Enqueue `cascade_merge_landed` for after the landing commits (it reads git, which is
    never done inside a transaction); nothing when the target's tip did not move."""
    if old_tip and new_tip and old_tip != new_tip:
        ids = [mr.id for mr in merge_requests]
        transaction.on_commit(
            lambda: tasks.cascade_merge_landed.delay(
                repository.id, target_branch, old_tip, new_tip, ids
            )
        )


def cascade_merge_landed(
    *,
    repository_id: int,
    target_branch: str,
    old_tip: str,
    new_tip: str,
    merge_request_ids: list[int],
) -> list[Notification]:
    """Tell every other live rig on `target_branch` what this landing means for it."""
    repository = Repository.objects.get(pk=repository_id)
    merge_requests = list(
        MergeRequest.objects.filter(id__in=merge_request_ids).select_related("rig")
    )
    change = landing.landed_change_read(
        repository=repository, target_branch=target_branch, old_tip=old_tip, new_tip=new_tip
    )
    if not change.files:
        return []
    sources = [mr.rig for mr in merge_requests if mr.rig is not None]
    what = _describe(sources, target_branch)
    cascade, depth = _cascade_of(sources)
    primary = merge_requests[0] if merge_requests else None
    manifests = [p for p in change.paths if path_matches(p, MANIFEST_PATTERNS)]
    code_symbols = {
        p: s
        for p, s in change.symbols.items()
        if p.endswith(CODE_SUFFIXES) and not path_matches(p, TEST_PATTERNS)
    }
    # Git reads and rebases first (no transaction open), then all writes in one transaction.
    rigs = _live_rigs_with_legs(repository, sources)
    told = [(rig, leg) for rig, leg in rigs if merge_target_for_rig(rig, leg) == target_branch]
    forecasts = landing.landed_change_forecasts(change, [rig for rig, _ in told])
    watched = {
        rig.id: [p for p in change.paths if path_matches(p, rig_watch_patterns(rig, leg))]
        for rig, leg in told
    }
    excerpts = landing.landed_change_excerpts(change, watched.values())
    impacts = []
    for rig, leg in told:
        forecast = forecasts[rig.id]
        rebased = not forecast.conflicts and _rebase_idle(repository, rig, new_tip)
        impacts.append(
            RigImpact(
                rig,
                leg,
                forecast.conflicts,
                forecast.behind,
                watched[rig.id],
                rebased,
                excerpts.get(tuple(watched[rig.id]), ""),
            )
        )
    common = {
        "source_rig": primary.rig if primary else None,
        "source_merge_request": primary,
        "source_commits": f"{old_tip}..{new_tip}",
        "cascade": cascade,
        "depth": depth,
    }
    items = [
        {
            "rig": impact.rig,
            "convoy_id": impact.leg.convoy_id if impact.leg else None,
            **notice,
            **common,
        }
        for impact in impacts
        for notice in _impact_notices(change, what, impact, manifests)
    ]
    with transaction.atomic():
        sent = notifications_send_many(items)
        sent.extend(cascade_follow_ups(change, what, code_symbols, common, rigs))
    return sent
