"""The one write a restore makes: point the restored rows at where things are now."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import transaction

from common import process
from events.services import event_append
from rigs import paths
from rigs.models import Repository, Rig
from runner.models import AgentRun


@dataclass
class Relocated:
    repositories: int = 0
    rigs: int = 0
    run_logs: int = 0
    runs_adopted: int = 0


@transaction.atomic
def installation_relocate(
    *, repository_paths: dict[int, str], backup_created_at: str, source_host: str
) -> Relocated:
    """After a restore into another data dir: each repository's new path, each rig's worktree
    under this data dir's worktree root, each run's log under this run log dir, and the runs
    that had a process when the backup was made handed to this machine, so its supervision
    finds their processes gone and fails (and restarts) them the usual way. Appends one
    `installation.restored` event."""
    done = Relocated()
    for repository_id, path in repository_paths.items():
        done.repositories += (
            Repository.objects.filter(pk=repository_id).exclude(path=path).update(path=path)
        )
    rigs = Rig.objects.exclude(worktree_path="").select_related("repository")
    for rig in rigs.only("id", "slug", "worktree_path", "repository__name"):
        worktree = str(paths.worktree_path_for(rig.repository.name, rig.slug))
        if rig.worktree_path != worktree:
            done.rigs += Rig.objects.filter(pk=rig.pk).update(worktree_path=worktree)
    log_dir = Path(settings.GASTOWN_RUN_LOG_DIR)
    for run in AgentRun.objects.exclude(log_path="").only("id", "log_path"):
        log_path = str(log_dir / Path(run.log_path).name)
        if run.log_path != log_path:
            done.run_logs += AgentRun.objects.filter(pk=run.pk).update(log_path=log_path)
    done.runs_adopted = AgentRun.objects.filter(state__in=AgentRun.PROCESS_STATES).update(
        host=process.host_name()
    )
    event_append(
        "installation.restored",
        {
            "backup_created_at": backup_created_at,
            "source_host": source_host,
            "repositories": len(repository_paths),
            "rigs_moved": done.rigs,
            "runs_adopted": done.runs_adopted,
        },
    )
    return done
