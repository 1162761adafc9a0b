"""Repositories: register, update."""

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from events.services import event_append
from rigs import paths, tasks
from rigs.models import Repository
from rigs.services.base import _changes, _full_clean, _refuse_unknown, _validate_field
from rigs.validators import validate_branch_name


def repository_name_from_path(path: str) -> str:
    """A repository name (a slug) made from its folder's name when none is given:
    `~/src/My_App.git` → `my-app`. The name's own rule is still checked on registering."""
    stem = Path(str(path).rstrip("/")).name.removesuffix(".git").lower()
    slug = re.sub(r"[^a-z0-9-]+", "-", stem).strip("-")[:63].rstrip("-")
    return slug or "repository"


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
    review_required: int = 0,
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
        review_required=review_required,
    )
    _full_clean(repository)
    repository.save()
    event_append(
        "repository.registered",
        {"repository": repository.id, "name": repository.name},
        repository_id=repository.id,
    )
    if init_if_missing and not paths.looks_like_repository(resolved):
        transaction.on_commit(lambda: tasks.repository_init.delay(repository.id))
    return repository


# What an admin may change on a registered repository (its location is fixed: rigs and
# worktrees point into it).
REPOSITORY_EDITABLE = (
    "name",
    "target_branch",
    "gate_command",
    "gate_timeout_seconds",
    "setup_command",
    "copy_files",
    "link_files",
    "merge_strategy",
    "batch_size",
    "auto_rebase",
    "review_required",
)


@transaction.atomic
def repository_update(*, repository: Repository, **fields: Any) -> Repository:
    """Change a registered repository's settings (admin only: several are commands the server
    runs). Appends `repository.updated` naming the fields that changed."""
    _refuse_unknown(fields, REPOSITORY_EDITABLE, "repository")
    changes = _changes(repository, fields)
    if not changes:
        return repository
    if "target_branch" in changes:
        _validate_field("target_branch", validate_branch_name, changes["target_branch"])
        location = Path(repository.path)
        if paths.looks_like_repository(location) and not paths.branch_on_disk(
            location, changes["target_branch"]
        ):
            raise ValidationError(
                {
                    "target_branch": f"branch '{changes['target_branch']}' does not exist in "
                    f"{repository.path}."
                }
            )
    for name, value in changes.items():
        setattr(repository, name, value)
    _full_clean(repository, validate_constraints=False)
    repository.save(update_fields=[*changes, "updated_at"])
    event_append(
        "repository.updated",
        {"repository": repository.id, "name": repository.name, "fields": sorted(changes)},
        repository_id=repository.id,
    )
    return repository


# --- agents -----------------------------------------------------------------------------------
