"""Writes for repositories, agents, rigs and merge requests: one transaction each.

Services never run git. Those that need git work record intent and enqueue a task after commit;
the task (rigs.operations) does the git work and records the result through these services.
"""

import contextlib
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from common.errors import Refusal
from common.statemachine import StaleState, transition
from rigs import paths, signals
from rigs.models import Agent, MergeRequest, Repository, Rig
from rigs.validators import validate_branch_name, validate_globs, validate_slug


class TeardownRefused(Refusal):
    """Tearing down would lose work (unmerged commits or uncommitted changes)."""

    code = "lost_work"
    field = "force"


def _full_clean(obj, **kwargs) -> None:
    """Model validation, re-raised with field names intact (the API turns it into a 400)."""
    obj.full_clean(**kwargs)


def _validate_field(field: str, validator, value) -> None:
    """Run a standalone validator so that its error names the field it is about."""
    try:
        validator(value)
    except ValidationError as exc:
        raise ValidationError({field: exc.messages}) from exc


# --- repositories -----------------------------------------------------------------------------


def repository_location_validate(*, path: str, target_branch: str, init_if_missing: bool):
    """The path stays inside the repository roots and is a repository with the target branch
    (or a place a new one may be made). Reads files only: no git process in a request."""
    resolved = paths.path_inside_roots(path)
    _validate_field("target_branch", validate_branch_name, target_branch)
    if resolved.exists() and not paths.looks_like_repository(resolved):
        if not (init_if_missing and resolved.is_dir() and not any(resolved.iterdir())):
            raise ValidationError({"path": f"{resolved} exists but is not a git repository."})
    elif not resolved.exists() and not init_if_missing:
        raise ValidationError(
            {"path": f"{resolved} does not exist (set init_if_missing to create a new one)."}
        )
    if paths.looks_like_repository(resolved) and not paths.branch_on_disk(resolved, target_branch):
        raise ValidationError(
            {"target_branch": f"branch '{target_branch}' does not exist in {resolved}."}
        )
    return resolved


@transaction.atomic
def repository_register(
    *,
    name: str,
    path: str,
    target_branch: str = "main",
    init_if_missing: bool = False,
    gate_command: str = "",
    gate_timeout_seconds: int = 600,
    setup_command: str = "",
    copy_files: Iterable[str] = (),
    link_files: Iterable[str] = (),
    merge_strategy: str = Repository.MergeStrategy.MERGE,
    batch_size: int = 4,
    auto_rebase: bool = False,
) -> Repository:
    """Register a repository. The path must stay inside the repository roots; an existing
    repository must have the target branch. With `init_if_missing` a new bare repository is
    made by a worker (git work never runs in a request)."""
    resolved = repository_location_validate(
        path=path, target_branch=target_branch, init_if_missing=init_if_missing
    )
    repository = Repository(
        name=name,
        path=str(resolved),
        target_branch=target_branch,
        init_if_missing=init_if_missing,
        gate_command=gate_command,
        gate_timeout_seconds=gate_timeout_seconds,
        setup_command=setup_command,
        copy_files=list(copy_files),
        link_files=list(link_files),
        merge_strategy=merge_strategy,
        batch_size=batch_size,
        auto_rebase=auto_rebase,
    )
    _full_clean(repository)
    repository.save()
    if init_if_missing and not paths.looks_like_repository(resolved):
        from rigs import tasks

        transaction.on_commit(lambda: tasks.repository_init.delay(repository.id))
    return repository


# --- agents -----------------------------------------------------------------------------------


@transaction.atomic
def agent_create(
    *,
    name: str,
    runtime: str = Agent.Runtime.CUSTOM,
    runtime_command: str = "",
    token_expires_at: datetime | None = None,
) -> tuple[Agent, str]:
    """Create an agent and return it with its token (shown once; only the hash is kept)."""
    agent = Agent(
        name=name,
        runtime=runtime,
        runtime_command=runtime_command,
        token_expires_at=token_expires_at,
    )
    _full_clean(agent, exclude=["token_hash", "token_prefix"])
    token = agent.issue_token()
    agent.save()
    return agent, token


@transaction.atomic
def agent_rotate_token(*, agent: Agent, expires_at: datetime | None = None) -> str:
    token = agent.issue_token()
    agent.token_expires_at = expires_at
    agent.save(update_fields=["token_hash", "token_prefix", "token_expires_at", "updated_at"])
    return token


@transaction.atomic
def agent_revoke_token(*, agent: Agent) -> None:
    agent.token_hash = ""
    agent.token_prefix = ""
    agent.save(update_fields=["token_hash", "token_prefix", "updated_at"])


# --- rigs -------------------------------------------------------------------------------------


@transaction.atomic
def rig_transition(*, rig: Rig, to: str, reason: str = "", **fields: Any) -> Rig:
    """The only way a rig changes state: checked against Rig.TRANSITIONS, announced by signal."""
    old = rig.state
    transition(rig, to, **fields)
    signals.rig_state_changed.send(sender=Rig, rig=rig, old_state=old, new_state=to, reason=reason)
    return rig


def _enqueue_provision(rig: Rig) -> None:
    from rigs import tasks

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
    signals.rig_state_changed.send(
        sender=Rig, rig=rig, old_state="", new_state=rig.state, reason="requested"
    )
    _enqueue_provision(rig)
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
    signals.rig_progress.send(sender=Rig, rig=rig)


@transaction.atomic
def rig_heartbeat(*, rig: Rig) -> Rig:
    """The agent is alive: record it, and a stalled or idle rig is working again."""
    now = timezone.now()
    Rig.objects.filter(pk=rig.pk).update(last_heartbeat_at=now)
    if rig.agent_id:
        Agent.objects.filter(pk=rig.agent_id).update(last_heartbeat_at=now)
    rig.last_heartbeat_at = now
    if rig.state in (Rig.State.STALLED, Rig.State.READY):
        try:
            rig_transition(rig=rig, to=Rig.State.WORKING, reason="heartbeat")
        except StaleState:
            rig.refresh_from_db()
    return rig


@transaction.atomic
def rig_sync_request(*, rig: Rig) -> None:
    from rigs import tasks

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
    now = now or timezone.now()
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
    from rigs import tasks

    transaction.on_commit(lambda: tasks.rig_teardown.delay(rig.id, force, requested_by))
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


@transaction.atomic
def merge_request_transition(
    *, merge_request: MergeRequest, to: str, reason: str = "", **fields: Any
) -> MergeRequest:
    old = merge_request.state
    if to not in MergeRequest.ACTIVE_STATES:
        fields.setdefault("finished_at", timezone.now())
    if reason:
        fields.setdefault("reason", reason)
    transition(merge_request, to, **fields)
    signals.merge_request_state_changed.send(
        sender=MergeRequest, merge_request=merge_request, old_state=old, new_state=to
    )
    return merge_request


@transaction.atomic
def merge_request_cancel(*, merge_request: MergeRequest, reason: str = "cancelled") -> MergeRequest:
    return merge_request_transition(
        merge_request=merge_request, to=MergeRequest.State.CANCELLED, reason=reason
    )


class MergeInProgress(Refusal):
    """A merge of this branch is being checked or gated right now."""

    code = "merge_in_progress"
    field = "rig"


@transaction.atomic
def merge_request_create(
    *,
    repository: Repository,
    source_branch: str,
    target_branch: str,
    rig: Rig | None = None,
    priority: int = 2,
    requested_by: str = "",
) -> MergeRequest:
    """Queue `source_branch` to land on `target_branch`. A queued request for the same branch is
    superseded (its newer tip is what lands); one already being checked refuses with 409."""
    _validate_field("source_branch", validate_branch_name, source_branch)
    _validate_field("target_branch", validate_branch_name, target_branch)
    if source_branch == target_branch:
        raise ValidationError({"target_branch": "a branch cannot merge into itself."})
    if not 0 <= priority <= 4:
        raise ValidationError({"priority": "priority must be between 0 and 4."})
    if rig is not None and rig.state not in Rig.LIVE_STATES:
        raise ValidationError(
            {"rig": f"rig {rig.slug} is {rig.state}; only a provisioned rig can ask to merge."}
        )
    active = list(
        MergeRequest.objects.select_for_update().filter(
            repository=repository,
            source_branch=source_branch,
            target_branch=target_branch,
            state__in=MergeRequest.ACTIVE_STATES,
        )
    )
    for previous in active:
        if previous.state != MergeRequest.State.QUEUED:
            raise MergeInProgress(
                f"merge request {previous.id} for {source_branch} is {previous.state}; "
                "wait for it to finish, then ask again."
            )
        merge_request_transition(
            merge_request=previous,
            to=MergeRequest.State.SUPERSEDED,
            reason="superseded by a newer request",
        )
    merge_request = MergeRequest.objects.create(
        repository=repository,
        rig=rig,
        source_branch=source_branch,
        target_branch=target_branch,
        source_commit=rig.head_commit if rig is not None else "",
        priority=priority,
        requested_by=requested_by,
    )
    signals.merge_request_state_changed.send(
        sender=MergeRequest, merge_request=merge_request, old_state="", new_state="queued"
    )
    if rig is not None and rig.state != Rig.State.MERGING:
        rig_transition(rig=rig, to=Rig.State.MERGING, reason=f"merge request {merge_request.id}")
    from rigs import tasks

    transaction.on_commit(lambda: tasks.merge_queue_process.delay(repository.id, target_branch))
    return merge_request


@transaction.atomic
def merge_request_finish(
    *, merge_request: MergeRequest, to: str, reason: str = "", **fields: Any
) -> MergeRequest:
    """End a merge request that did not land (conflicted, failed, cancelled); its rig goes back
    to work. Receivers tell the rig why (conflicting files, gate log)."""
    merge_request_transition(merge_request=merge_request, to=to, reason=reason, **fields)
    rig = merge_request.rig
    if rig is not None and rig.state == Rig.State.MERGING:
        with contextlib.suppress(StaleState):
            rig_transition(rig=rig, to=Rig.State.WORKING, reason=f"merge {to}")
    return merge_request


@transaction.atomic
def merge_requests_landed(
    *,
    merge_requests: list[MergeRequest],
    repository: Repository,
    target_branch: str,
    old_tip: str,
    new_tip: str,
    changed_paths: list[str],
    commits: dict[int, dict[str, Any]],
) -> None:
    """Record that a published candidate landed these merge requests, all in one transaction;
    then announce it (`merge_landed`) for convoys and cascades."""
    for merge_request in merge_requests:
        merge_request_transition(
            merge_request=merge_request,
            to=MergeRequest.State.MERGED,
            reason="landed",
            **commits.get(merge_request.id, {}),
        )
        rig = merge_request.rig
        if rig is not None and rig.state == Rig.State.MERGING:
            rig_transition(rig=rig, to=Rig.State.MERGED, reason=f"landed on {target_branch}")
    signals.merge_landed.send(
        sender=MergeRequest,
        merge_requests=merge_requests,
        repository=repository,
        target_branch=target_branch,
        old_tip=old_tip,
        new_tip=new_tip,
        changed_paths=changed_paths,
    )
