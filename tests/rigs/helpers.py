import subprocess
import time
from pathlib import Path

from rigs import services
from rigs.models import Rig


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.05, message: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message or predicate}")


def wait_state(obj, *states: str, timeout: float = 60.0, name: str = ""):
    """Refresh a model object until its `state` is one of `states`; returns it."""

    def check():
        obj.refresh_from_db()
        return obj.state in states

    wait_for(check, timeout, message=f"{name or obj} to reach {states} (is {obj.state})")
    return obj


def wait_rig_state(rig: Rig, *states: str, timeout: float = 60.0) -> Rig:
    return wait_state(rig, *states, timeout=timeout, name=f"rig {rig.slug}")


def commit_file(worktree: Path, name: str, content: str, message: str = "change") -> str:
    path = Path(worktree) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    env = {
        "GIT_AUTHOR_NAME": "agent",
        "GIT_AUTHOR_EMAIL": "a@a",
        "GIT_COMMITTER_NAME": "agent",
        "GIT_COMMITTER_EMAIL": "a@a",
        "HOME": str(worktree),
        "PATH": "/usr/bin:/bin",
    }
    subprocess.run(["git", "add", "-A"], cwd=worktree, check=True, env=env)
    subprocess.run(["git", "commit", "-q", "-m", message], cwd=worktree, check=True, env=env)
    return subprocess.run(
        ["git", "rev-parse", "HEAD"],
        cwd=worktree,
        check=True,
        env=env,
        capture_output=True,
        text=True,
    ).stdout.strip()


def register(git_repo: Path, **kw):
    kw.setdefault("name", git_repo.name)
    return services.repository_register(path=str(git_repo), **kw)


def rig_ready(repository, slug: str, agent=None) -> Rig:
    """A rig requested and provisioned here (no worker), asserted ready."""
    from django.db import transaction

    from rigs import operations

    with transaction.atomic():
        rig = services.rig_request(repository=repository, slug=slug, agent=agent)
    operations.rig_provision_run(rig.id)
    rig.refresh_from_db()
    assert rig.state == Rig.State.READY, rig.failure_reason
    return rig


def rig_land(rig: Rig):
    """The rig's branch merged into its target by the real queue, asserted merged."""
    from django.db import transaction

    from rigs import merge_queue
    from rigs.models import MergeRequest

    with transaction.atomic():
        mr = services.merge_request_create(
            repository=rig.repository,
            source_branch=rig.branch,
            target_branch=rig.repository.target_branch,
            rig=rig,
        )
    merge_queue.merge_queue_process(rig.repository_id, rig.repository.target_branch)
    mr.refresh_from_db()
    assert mr.state == MergeRequest.State.MERGED, mr.reason
    return mr
