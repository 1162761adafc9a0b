"""Rigs: request, provision hand-off, sync, heartbeat, teardown, archive."""

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from common.clock import db_now
from common.statemachine import StaleState, transition
from rigs import paths, signals, tasks
from rigs.models import Agent, Repository, Rig
from rigs.services.base import (
    TeardownRefused,
    _changes,
    _full_clean,
    _refuse_unknown,
    _rig_event,
    _rig_state_event,
    _validate_field,
)
from rigs.validators import validate_branch_name, validate_globs, validate_slug


@transaction.atomic
def rig_transition(*, rig: Rig, to: str, reason: str = "", **fields: Any) -> Rig:
    """The only way a rig changes state: checked against Rig.TRANSITIONS, announced by signal."""
    old = rig.state
    transition(rig, to, **fields)
    _rig_state_event(rig, old, to, reason)
    signals.rig_state_changed.send(sender=Rig, rig=rig, old_state=old, new_state=to, reason=reason)
    return rig


def _enqueue_provision(rig: Rig) -> None:
    transaction.on_commit(lambda: tasks.rig_provision.delay(rig.id))


@transaction.atomic
def rig_request(
    *,
    repository: Repository,
    slug: str,
    agent: Agent | None = None,
    scope: Iterable[str] = (),
    watch: Iterable[str] = (),
    sparse: bool = False,
    base_ref: str = "",
    role: str = "",
) -> Rig:
    """Record a new rig (state `requested`) and enqueue its provisioning."""
    _validate_field("slug", validate_slug, slug)
    scope, watch = list(scope), list(watch)
    _validate_field("scope", validate_globs, scope)
    _validate_field("watch", validate_globs, watch)
    if sparse and not (scope or watch):
        raise ValidationError({"sparse": "a sparse rig needs scope or watch globs to check out."})
    if base_ref:
        _validate_field("base_ref", validate_branch_name, base_ref)
    rig = Rig(
        repository=repository,
        slug=slug,
        agent=agent,
        branch=f"rig/{slug}",
        base_ref=base_ref,
        worktree_path=str(paths.worktree_path_for(repository.name, slug)),
        scope=scope,
        watch=watch,
        sparse=sparse,
        role=role,
    )
    # Constraints are left to the database (validating them costs a query each): a new rig
    # cannot break the check constraints, and a taken slug is the IntegrityError below.
    _full_clean(rig, validate_unique=False, validate_constraints=False)
    try:
        with transaction.atomic():
            rig.save()
    except IntegrityError as exc:
        raise ValidationError(
            {"slug": f"a rig named '{slug}' already exists in repository {repository.name}."}
        ) from exc
    _rig_state_event(rig, "", rig.state, "requested")
    signals.rig_state_changed.send(
        sender=Rig, rig=rig, old_state="", new_state=rig.state, reason="requested"
    )
    _enqueue_provision(rig)
    return rig


# What may change on a rig once it exists (its slug, repository, base and sparseness name its
# branch and worktree). The API lets agents and operators change RIG_SETTINGS only.
RIG_EDITABLE = ("agent", "scope", "watch", "role", "notify_level")
RIG_SETTINGS = ("role", "notify_level")


@transaction.atomic
def rig_update(*, rig: Rig, **fields: Any) -> Rig:
    """Change a rig's settings (the API's PATCH, the admin's change form): validated, saved,
    announced as `rig.updated` with the names of the fields that changed."""
    _refuse_unknown(fields, RIG_EDITABLE, "rig")
    for name in ("scope", "watch"):
        if name in fields:
            fields[name] = [] if fields[name] is None else fields[name]
            _validate_field(name, validate_globs, fields[name])
    changes = _changes(rig, fields)
    if not changes:
        return rig
    for name, value in changes.items():
        setattr(rig, name, value)
    _full_clean(rig, validate_unique=False, validate_constraints=False)
    update_fields = [("agent_id" if name == "agent" else name) for name in changes]
    rig.save(update_fields=[*update_fields, "updated_at"])
    _rig_event("rig.updated", rig, {"rig": rig.id, "slug": rig.slug, "fields": sorted(changes)})
    return rig


@transaction.atomic
def rig_retry(*, rig: Rig) -> Rig:
    """A failed provision goes back to `requested` and is tried again."""
    rig_transition(rig=rig, to=Rig.State.REQUESTED, reason="retry", failure_reason="", progress=0)
    _enqueue_provision(rig)
    return rig


@transaction.atomic
def rig_progress_set(*, rig: Rig, progress: int, label: str) -> None:
    Rig.objects.filter(pk=rig.pk).update(
        progress=progress, progress_label=label, updated_at=timezone.now()
    )
    rig.progress, rig.progress_label = progress, label
    _rig_event("rig.progress", rig, {"rig": rig.id, "progress": progress, "label": label})
    signals.rig_progress.send(sender=Rig, rig=rig)


@transaction.atomic
def rig_heartbeat(*, rig: Rig) -> Rig:
    """The agent is alive: record it (the claims it holds renew: `rig_heartbeat`), and a
    stalled or idle rig is working again."""
    now = timezone.now()
    Rig.objects.filter(pk=rig.pk).update(last_heartbeat_at=now)
    if rig.agent_id:
        Agent.objects.filter(pk=rig.agent_id).update(last_heartbeat_at=now)
    rig.last_heartbeat_at = now
    signals.rig_heartbeat.send(sender=Rig, rig=rig, at=now)
    if rig.state in (Rig.State.STALLED, Rig.State.READY):
        try:
            rig_transition(rig=rig, to=Rig.State.WORKING, reason="heartbeat")
        except StaleState:
            rig.refresh_from_db()
    return rig


@transaction.atomic
def rig_sync_request(*, rig: Rig) -> None:
    transaction.on_commit(lambda: tasks.rig_sync.delay(rig.id))


@transaction.atomic
def rig_sync_record(
    *,
    rig: Rig,
    head_commit: str,
    target_commit: str,
    ahead: int,
    behind: int,
    dirty: bool,
    changed_files: list[dict],
) -> Rig:
    """Store what a sync read from disk; announce a moved branch (for the overlap radar)."""
    old_head = rig.head_commit
    fields = {
        "head_commit": head_commit,
        "target_commit": target_commit,
        "ahead": ahead,
        "behind": behind,
        "dirty": dirty,
        "changed_files": changed_files,
        "last_synced_at": timezone.now(),
    }
    Rig.objects.filter(pk=rig.pk).update(**fields)
    for name, value in fields.items():
        setattr(rig, name, value)
    if head_commit != old_head:
        _rig_event(
            "rig.branch",
            rig,
            {
                "rig": rig.id,
                "slug": rig.slug,
                "from": old_head,
                "to": head_commit,
                "ahead": ahead,
                "behind": behind,
                "files": len(changed_files),
            },
        )
        signals.branch_updated.send(
            sender=Rig,
            rig=rig,
            old_head=old_head,
            new_head=head_commit,
            changed_files=changed_files,
        )
    return rig


def rigs_mark_stalled(*, now: datetime | None = None) -> list[Rig]:
    """Working rigs whose agent has been silent past the limit become `stalled`."""
    now = now or db_now()  # the database's clock: a worker's jumped clock stalls nothing
    limit = now - timedelta(seconds=settings.GASTOWN_HEARTBEAT_LIMIT_SECONDS)
    silent = Rig.objects.filter(state=Rig.State.WORKING).filter(
        last_heartbeat_at__lt=limit
    ) | Rig.objects.filter(
        state=Rig.State.WORKING, last_heartbeat_at__isnull=True, updated_at__lt=limit
    )
    stalled = []
    for rig in silent.select_related("repository"):
        try:
            with transaction.atomic():
                rig_transition(
                    rig=rig,
                    to=Rig.State.STALLED,
                    reason=f"no heartbeat for {settings.GASTOWN_HEARTBEAT_LIMIT_SECONDS}s",
                )
            stalled.append(rig)
        except StaleState:
            continue  # a heartbeat won the race
    return stalled


@transaction.atomic
def rig_teardown_request(*, rig: Rig, force: bool = False, requested_by: str = "") -> Rig:
    """Refuse at once when the last sync already shows work that would be lost; otherwise a
    worker re-checks on disk and tears down (or refuses and records why)."""
    if rig.state == Rig.State.ARCHIVED:
        raise TeardownRefused(f"rig {rig.slug} is already archived.")
    if not force and (rig.ahead or rig.dirty):
        raise TeardownRefused(lost_work_message(rig, rig.ahead, _dirty_files(rig)))
    transaction.on_commit(lambda: tasks.rig_teardown.delay(rig.id, force, requested_by))
    return rig


@transaction.atomic
def rig_teardown_refused_record(*, rig: Rig, message: str) -> Rig:
    """A worker found work that a teardown would lose: say why on the rig."""
    Rig.objects.filter(pk=rig.pk).update(failure_reason=message)
    rig.failure_reason = message
    rig_progress_set(rig=rig, progress=rig.progress, label="teardown refused")
    return rig


def _dirty_files(rig: Rig) -> list[str]:
    return ["(uncommitted changes)"] if rig.dirty else []


def lost_work_message(rig: Rig, unmerged: int, dirty: list[str]) -> str:
    parts = []
    if unmerged:
        parts.append(
            f"{unmerged} commit(s) on {rig.branch} are not on {rig.repository.target_branch}"
        )
    if dirty:
        shown = ", ".join(dirty[:10]) + (f" and {len(dirty) - 10} more" if len(dirty) > 10 else "")
        parts.append(f"uncommitted changes in {shown}")
    return (
        f"Refusing to tear down rig {rig.slug}: {'; '.join(parts)}. Merge or commit them, "
        "or force the teardown (the branch tip and uncommitted work are saved under "
        f"refs/gastown/archive/{rig.slug}/)."
    )


@transaction.atomic
def rig_archive_record(*, rig: Rig, archive_ref: str = "", reason: str = "") -> Rig:
    return rig_transition(
        rig=rig,
        to=Rig.State.ARCHIVED,
        reason=reason or "torn down",
        failure_reason=f"archived at {archive_ref}" if archive_ref else "",
    )


# --- merge requests ---------------------------------------------------------------------------
