"""Convoys and legs: create, launch, add a leg, land; the derived state in one function.

`convoy_create` validates everything before writing anything; `convoy_launch` provisions the
missing rigs and hands wave 1 to its rigs; legs land when their rig's merge lands (see
`convoys.services.follow`), and `convoy_refresh_state` is the one function that moves a
launched convoy between launched, blocked, landing and landed and dispatches unblocked legs.
"""

from collections import defaultdict
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from common.errors import Refusal
from common.statemachine import IllegalTransition, transition
from convoys.models import Bead, Convoy, Leg, LegDependency
from convoys.selectors import (
    DEAD_RIG_STATES,
    convoy_derived_state,
    convoy_rollup,
    leg_merge_target,
    merge_target_for_rig,
    rig_current_leg,
    rig_finished_work,
    rig_open_work,
    work_finished_message,
)
from convoys.services.legs_input import (
    busy_legs,
    legs_validate,
    legs_write,
    unique_slug,
)
from convoys.signals import convoy_cancelled, leg_dispatched
from events.services import event_append
from notifications.models import Notification
from notifications.services import notification_send
from rigs import services as rig_services
from rigs.models import MergeRequest, Repository, Rig
from rigs.selectors import RigDirty, rig_dirty
from rigs.validators import validate_branch_name, validate_slug

Kind = Notification.Kind
Severity = Notification.Severity


@transaction.atomic
def convoy_transition(*, convoy: Convoy, to: str, reason: str = "", **fields) -> Convoy:
    old = convoy.state
    transition(convoy, to, **fields)
    event_append(
        "convoy.state",
        {"from": old, "to": to, "reason": reason, "title": convoy.title},
        repository_id=convoy.repository_id,
        convoy_id=convoy.id,
    )
    return convoy


@transaction.atomic
def convoy_cancel(*, convoy: Convoy, reason: str = "") -> Convoy:
    for leg in convoy.legs.exclude(state__in=[Leg.State.LANDED, Leg.State.CANCELLED]):
        leg_transition(leg=leg, to=Leg.State.CANCELLED)
    landing = convoy.landing_merge_request
    if landing is not None and landing.is_active:
        from rigs.services import merge_request_cancel

        merge_request_cancel(merge_request=landing, reason=f"convoy {convoy.slug} cancelled")
    convoy_transition(convoy=convoy, to=Convoy.State.CANCELLED, reason=reason)
    convoy_cancelled.send(sender=Convoy, convoy=convoy)
    return convoy


@transaction.atomic
def leg_transition(*, leg: Leg, to: str, **fields) -> Leg:
    old = leg.state
    if to == Leg.State.LANDED:
        fields.setdefault("landed_at", timezone.now())
    transition(leg, to, **fields)
    event_append(
        "leg.state",
        {"leg": leg.id, "key": leg.key, "from": old, "to": to},
        convoy_id=leg.convoy_id,
        rig_id=leg.rig_id,
    )
    return leg


# --- convoys: create, launch, add a leg -----------------------------------------------------


@transaction.atomic
def convoy_create(
    *,
    title: str,
    description: str = "",
    repository: Repository,
    target_branch: str = "",
    legs: list[dict[str, Any]],
    slug: str | None = None,
    use_integration_branch: bool = False,
    budget_usd: Decimal | None = None,
    review_required: int = 0,
    created_by=None,
) -> Convoy:
    """A draft convoy with its legs. Everything is checked before anything is written.

    Each leg: `key`, `title`, `description`, `rig` (a Rig or its id) or `agent` (an Agent or its
    name: a rig is provisioned for it at launch), `scope`, `watch`, `depends_on` (leg keys).
    Raises ValidationError naming the field (`legs[1].depends_on`) and, for a cycle, the cycle.
    """
    errors: dict[str, str] = {}
    if not isinstance(title, str) or not title.strip():
        errors["title"] = "a convoy needs a title."
    elif len(title) > 200:
        errors["title"] = "at most 200 characters."
    if not isinstance(repository, Repository):
        errors["repository"] = "unknown repository."
    target_branch = target_branch or (
        repository.target_branch if isinstance(repository, Repository) else ""
    )
    try:
        validate_branch_name(target_branch)
    except ValidationError as exc:
        errors["target_branch"] = exc.messages[0]
    if slug:
        try:
            validate_slug(slug)
        except ValidationError as exc:
            errors["slug"] = exc.messages[0]
        else:
            if Convoy.objects.filter(slug=slug).exists():
                errors["slug"] = f"a convoy '{slug}' already exists."
    if budget_usd is not None and budget_usd < 0:
        errors["budget_usd"] = "a budget cannot be negative."
    if (
        isinstance(review_required, bool)
        or not isinstance(review_required, int)
        or not (0 <= review_required <= 10)
    ):
        errors["review_required"] = "a number of approvals from 0 to 10."
    if use_integration_branch and slug and target_branch == f"convoy/{slug}":
        errors["target_branch"] = "the target cannot be the convoy's own integration branch."
    if errors:
        raise ValidationError(errors)
    specs = legs_validate(repository=repository, legs=legs, existing={}, convoy=None)

    try:
        with transaction.atomic():  # savepoint: a racing create may take the slug first
            convoy = Convoy.objects.create(
                slug=slug or unique_slug(Convoy.objects, slugify(title)[:50]),
                title=title.strip(),
                description=description or "",
                repository=repository,
                target_branch=target_branch,
                use_integration_branch=use_integration_branch,
                budget_usd=budget_usd,
                review_required=review_required,
                created_by=created_by,
            )
    except IntegrityError as exc:
        raise ValidationError({"slug": "that slug was just taken; try again."}) from exc
    event_append(
        "convoy.created",
        {"title": convoy.title, "slug": convoy.slug, "legs": [s.key for s in specs]},
        repository_id=repository.pk,
        convoy_id=convoy.id,
    )
    legs_write(convoy, specs, {})
    return convoy


def _legs_by_key_with_deps(convoy: Convoy) -> dict[str, Leg]:
    legs = {leg.id: leg for leg in convoy.legs.all()}
    for leg in legs.values():
        leg._depends_on_legs = []
    for leg_id, dep_id in LegDependency.objects.filter(leg__convoy=convoy).values_list(
        "leg_id", "depends_on_id"
    ):
        legs[leg_id]._depends_on_legs.append(legs[dep_id])
    return {leg.key: leg for leg in legs.values()}


def _lock(convoy: Convoy) -> Convoy:
    """Serialize the writers of one convoy (a row lock on PostgreSQL; SQLite serializes writers
    anyway), then reload the caller's instance in place."""
    Convoy.objects.select_for_update().filter(pk=convoy.pk).values_list("pk", flat=True).get()
    convoy.refresh_from_db()
    return convoy


def _leg_provision(convoy: Convoy, leg: Leg) -> Rig:
    """Request a rig for a leg that names an agent; its pool beads move into it."""
    from rigs.services import rig_request

    base = slugify(f"{convoy.slug}-{leg.key}")[:63].strip("-")
    slug = unique_slug(Rig.objects.filter(repository=convoy.repository), base)
    repo_target = convoy.repository.target_branch
    rig = rig_request(
        repository=convoy.repository,
        slug=slug,
        agent=leg.agent,
        scope=leg.scope,
        watch=leg.watch,
        # A convoy may target another branch than the repository's: start from it.
        base_ref=convoy.target_branch if convoy.target_branch != repo_target else "",
        role=leg.key[:40],
    )
    Leg.objects.filter(pk=leg.pk).update(rig=rig, updated_at=timezone.now())
    leg.rig = rig
    Bead.objects.filter(leg=leg, rig__isnull=True).update(rig=rig, updated_at=timezone.now())
    return rig


@transaction.atomic
def convoy_launch(*, convoy: Convoy) -> Convoy:
    """draft → launched: provision the missing rigs, then hand wave 1 to its rigs."""
    convoy = _lock(convoy)
    if convoy.state != Convoy.State.DRAFT:
        raise IllegalTransition(f"convoy {convoy.slug} is {convoy.state}; only a draft launches.")
    legs = list(convoy.legs.select_related("rig", "agent").order_by("position", "id"))
    if not legs:
        raise ValidationError({"legs": "a convoy needs at least one leg to launch."})
    errors = {}
    busy = busy_legs([leg.rig for leg in legs if leg.rig], convoy)
    for n, leg in enumerate(legs):
        if leg.rig is not None and leg.rig.state in DEAD_RIG_STATES:
            errors[f"legs[{n}].rig"] = f"rig {leg.rig.slug} is {leg.rig.state}."
        elif leg.rig is not None and leg.rig_id in busy:
            other = busy[leg.rig_id]
            errors[f"legs[{n}].rig"] = (
                f"rig {leg.rig.slug} is busy with leg {other.key} of convoy "
                f"'{other.convoy.title}'; a rig works on one leg at a time."
            )
        elif leg.rig is None and (leg.agent is None or not leg.agent.is_active):
            errors[f"legs[{n}].agent"] = "no rig and no active agent to provision one for."
    if errors:
        raise ValidationError(errors)
    for leg in legs:
        if leg.rig is None:
            _leg_provision(convoy, leg)
    convoy_transition(convoy=convoy, to=Convoy.State.LAUNCHED, launched_at=timezone.now())
    return convoy_refresh_state(convoy=convoy)


@transaction.atomic
def convoy_leg_add(*, convoy: Convoy, leg: dict[str, Any]) -> Leg:
    """Add one leg (same fields as in convoy_create). A landed convoy reopens; a launched one
    provisions the leg's rig and hands it the leg when its dependencies have landed."""
    convoy = _lock(convoy)
    if convoy.state == Convoy.State.CANCELLED:
        raise ValidationError({"convoy": "a cancelled convoy takes no more legs."})
    existing = _legs_by_key_with_deps(convoy)
    [spec] = legs_validate(
        repository=convoy.repository,
        legs=[leg],
        existing=existing,
        convoy=convoy,
        first_index=len(existing),
    )
    [new] = legs_write(convoy, [spec], existing)
    if convoy.state == Convoy.State.DRAFT:
        return new
    if convoy.state == Convoy.State.LANDED:
        convoy_transition(
            convoy=convoy,
            to=Convoy.State.LAUNCHED,
            reason=f"reopened: leg {new.key} added",
            landed_at=None,
            landing_merge_request=None,
        )
    if new.rig is None:
        _leg_provision(convoy, new)
    convoy_refresh_state(convoy=convoy)
    new.refresh_from_db()
    return new


# --- convoys: dispatch, landing, derived state ----------------------------------------------


def _leg_dispatch(convoy: Convoy, leg: Leg, landed_deps: list[Leg]) -> None:
    """pending → ready, and tell its rig (assigned for wave 1, "you are unblocked" after)."""
    leg_transition(leg=leg, to=Leg.State.READY)
    if leg.rig is None:
        return
    leg_dispatched.send(sender=Leg, leg=leg, rig=leg.rig)
    target = leg_merge_target(leg)
    sync = (
        f" Sync your rig with {target} first: it holds the work you waited for."
        if convoy.use_integration_branch and landed_deps
        else ""
    )
    changes = {
        "convoy": convoy.id,
        "leg": leg.key,
        "merge_target": target,
        "landed": [d.key for d in landed_deps],
    }
    if landed_deps:
        notification_send(
            rig=leg.rig,
            kind=Kind.UNBLOCKED,
            severity=Severity.INFO,
            summary=f"You are unblocked: leg {leg.key} of convoy '{convoy.title}' can start "
            f"({', '.join(d.key for d in landed_deps)} landed).",
            action=f"Start leg {leg.key}: {leg.title}. Merge into {target} when done.{sync}",
            changes=changes,
            topic=f"leg:{leg.id}",
            convoy_id=convoy.id,
        )
    else:
        notification_send(
            rig=leg.rig,
            kind=Kind.ASSIGNED,
            severity=Severity.INFO,
            summary=f"Leg {leg.key} of convoy '{convoy.title}' is yours: {leg.title}",
            action=f"Start leg {leg.key}. Merge into {target} when done.",
            changes=changes,
            topic=f"leg:{leg.id}",
            convoy_id=convoy.id,
        )


def _landing_queue(convoy: Convoy) -> MergeRequest:
    """Queue convoy/<slug> → target (or reuse an active one for the same branches)."""
    from rigs.services import merge_request_create

    active = MergeRequest.objects.filter(
        repository=convoy.repository,
        source_branch=convoy.integration_branch,
        target_branch=convoy.target_branch,
        state__in=MergeRequest.ACTIVE_STATES,
    ).first()
    mr = active or merge_request_create(
        repository=convoy.repository,
        source_branch=convoy.integration_branch,
        target_branch=convoy.target_branch,
        rig=None,
        priority=1,
        requested_by=f"convoy:{convoy.slug}",
    )
    Convoy.objects.filter(pk=convoy.pk).update(landing_merge_request=mr)
    convoy.landing_merge_request = mr
    event_append(
        "convoy.landing_queued",
        {"merge_request": mr.id, "source": mr.source_branch, "target": mr.target_branch},
        repository_id=convoy.repository_id,
        convoy_id=convoy.id,
    )
    return mr


@transaction.atomic
def convoy_refresh_state(*, convoy: Convoy) -> Convoy:
    """The one place a launched convoy's derived state is decided. Idempotent.

    Hands every pending leg whose dependencies have all landed to its rig; with an integration
    branch, queues the convoy's landing merge request once every leg has landed; then moves the
    convoy to launched, blocked, landing or landed as `convoy_rollup` derives it.
    """
    convoy = _lock(convoy)
    if convoy.state not in Convoy.ACTIVE_STATES:
        return convoy
    legs = list(convoy.legs.select_related("rig").order_by("position", "id"))
    by_id = {leg.id: leg for leg in legs}
    deps: dict[int, list[Leg]] = defaultdict(list)
    for leg_id, dep_id in LegDependency.objects.filter(leg__convoy=convoy).values_list(
        "leg_id", "depends_on_id"
    ):
        deps[leg_id].append(by_id[dep_id])
    for leg in legs:
        leg.convoy = convoy
        if leg.state == Leg.State.PENDING and all(
            d.state == Leg.State.LANDED for d in deps[leg.id]
        ):
            _leg_dispatch(convoy, leg, deps[leg.id])

    counted = [leg for leg in legs if leg.state != Leg.State.CANCELLED]
    all_landed = counted and all(leg.state == Leg.State.LANDED for leg in counted)
    if convoy.use_integration_branch and all_landed and convoy.landing_merge_request_id is None:
        _landing_queue(convoy)
    landing = convoy.landing_merge_request if convoy.landing_merge_request_id else None
    target = convoy_derived_state(convoy, counted, landing)
    if target != convoy.state:
        fields = {"landed_at": timezone.now()} if target == Convoy.State.LANDED else {}
        convoy_transition(convoy=convoy, to=target, reason=_state_reason(convoy, target), **fields)
    return convoy


def _state_reason(convoy: Convoy, target: str) -> str:
    if target == Convoy.State.BLOCKED:
        rollup = convoy_rollup(convoy)
        reasons = [f"{b['leg']}: {', '.join(b['reasons'])}" for b in rollup["blocked"]]
        landing = rollup["landing_merge_request"]
        if landing and landing["state"] not in MergeRequest.ACTIVE_STATES:
            reasons.append(f"landing merge request {landing['id']} {landing['state']}")
        return "no leg can move: " + "; ".join(reasons)
    if target == Convoy.State.LANDED:
        return "every leg landed"
    return ""


@transaction.atomic
def leg_land(*, leg: Leg, merge_request: MergeRequest) -> Leg:
    """The leg's rig's work is merged on the leg's merge target: the leg has landed."""
    return leg_transition(leg=leg, to=Leg.State.LANDED, landed_merge_request=merge_request)


@transaction.atomic
def convoy_landing_merged(*, convoy: Convoy, merge_request: MergeRequest) -> Convoy:
    """The integration branch landed on the target. The convoy lands, unless a leg was added
    meanwhile: then it waits for that leg and lands again with a new merge request."""
    convoy = _lock(convoy)
    if convoy.state not in Convoy.ACTIVE_STATES:
        return convoy
    counted = convoy.legs.exclude(state=Leg.State.CANCELLED)
    if counted.exists() and not counted.exclude(state=Leg.State.LANDED).exists():
        return convoy_transition(
            convoy=convoy,
            to=Convoy.State.LANDED,
            reason=f"{convoy.integration_branch} landed on {convoy.target_branch}",
            landed_at=timezone.now(),
        )
    Convoy.objects.filter(pk=convoy.pk).update(landing_merge_request=None)
    convoy.landing_merge_request = None
    return convoy_refresh_state(convoy=convoy)


@transaction.atomic
def convoy_landing_retry(*, convoy: Convoy) -> Convoy:
    """After a failed landing merge request (convoy blocked): queue a new one."""
    convoy = _lock(convoy)
    landing = convoy.landing_merge_request
    if landing is not None and landing.is_active:
        raise ValidationError({"convoy": f"merge request {landing.id} is still {landing.state}."})
    Convoy.objects.filter(pk=convoy.pk).update(landing_merge_request=None)
    convoy.landing_merge_request = None
    return convoy_refresh_state(convoy=convoy)


# Rig state → the state its open leg follows (landing only ever comes from a merge).
_LEG_FOLLOWS_RIG = {
    Rig.State.WORKING: ({Leg.State.READY, Leg.State.MERGING}, Leg.State.WORKING),
    Rig.State.MERGING: ({Leg.State.READY, Leg.State.WORKING}, Leg.State.MERGING),
    Rig.State.READY: ({Leg.State.MERGING}, Leg.State.WORKING),
    Rig.State.STALLED: ({Leg.State.MERGING}, Leg.State.WORKING),
}


@transaction.atomic
def leg_follow_rig(*, leg: Leg, rig_state: str) -> Leg:
    """Mirror the rig's progress on its leg (ready → working → merging), then refresh the
    convoy (a failed or archived rig may leave it blocked)."""
    rule = _LEG_FOLLOWS_RIG.get(rig_state)
    if rule and leg.state in rule[0]:
        leg_transition(leg=leg, to=rule[1])
    if leg.convoy.state in Convoy.ACTIVE_STATES:
        convoy_refresh_state(convoy=leg.convoy)
    return leg


class OpenWork(Refusal):
    """A rig asked to land while its leg still holds work: open or in-progress beads, or
    uncommitted changes in its worktree. `force` overrides it."""

    code = "open_work"
    field = "force"


class WorkFinished(Refusal):
    """The rig's work is finished (its leg landed, or was cancelled with its convoy): there is
    nothing more to land from it, nor an agent to launch in it."""

    code = "work_finished"
    field = "rig"


OPEN_WORK_LISTED = 5  # beads named in an `open_work` refusal; the rest are counted


def _open_work_message(rig: Rig, leg: Leg | None, beads: list[Bead], total: int, dirty: RigDirty):
    parts = []
    if beads:
        where = f"leg `{leg.key}`" if leg is not None else f"rig {rig.slug}"
        listed = "; ".join(
            f'{b.short_id} "{b.title[:80]}" ({b.status.replace("_", " ")})' for b in beads
        )
        more = f" and {total - len(beads)} more" if total > len(beads) else ""
        parts.append(f"{total} open or in-progress bead(s) on {where}: {listed}{more}")
    tree = "has uncommitted changes" if dirty.dirty else "is clean"
    parts.append(f"its worktree {tree} ({dirty.as_of})")
    todo = []
    if beads:
        todo.append("close the beads (`gt close ID`)")
    if dirty.dirty:
        todo.append("commit your changes")
    todo_text = " and ".join(todo)
    return (
        f"rig {rig.slug} still has work to do: {'; '.join(parts)}. "
        f"{todo_text[0].upper()}{todo_text[1:]}, then ask again; or ask with force "
        "(`gt done --force`, `force: true`) to land it as it is."
    )


def rig_merge_request(
    *, rig: Rig, requested_by: str = "", priority: int = 2, force: bool = False
) -> MergeRequest:
    """Queue a rig's branch to land where its work belongs: its convoy's integration branch, or
    the repository's target. The one place API, CLI, admin and board ask to merge a rig.

    Refused (409) when the rig's work is finished (`work_finished`: its leg landed or ended),
    and while its current leg has open or in-progress beads or its worktree has uncommitted
    changes (`open_work`, naming the beads and saying whether the tree is dirty) unless
    `force`, which is recorded on the merge request. Dirty is read from the worktree now, before
    the transaction (no git inside one), else the last sync's value."""
    dirty = rig_dirty(rig) if not force and rig.state in Rig.LIVE_STATES else None
    with transaction.atomic():
        leg = rig_current_leg(rig)
        if rig.state in Rig.LIVE_STATES:
            finished = rig_finished_work(rig, leg)
            if finished is not None:
                raise WorkFinished(work_finished_message(rig, finished))
            if dirty is not None:
                open_beads = rig_open_work(rig, leg)
                beads = list(open_beads[:OPEN_WORK_LISTED])
                total = len(beads) if len(beads) < OPEN_WORK_LISTED else open_beads.count()
                if beads or dirty.dirty:
                    raise OpenWork(_open_work_message(rig, leg, beads, total, dirty))
        reviews = rig.repository.review_required
        if leg is not None:
            reviews = max(reviews, leg.convoy.review_required)
        return rig_services.merge_request_create(
            repository=rig.repository,
            source_branch=rig.branch,
            target_branch=merge_target_for_rig(rig, leg),
            rig=rig,
            priority=priority,
            requested_by=requested_by[:150],
            forced=force,
            reviews_required=reviews,
        )
