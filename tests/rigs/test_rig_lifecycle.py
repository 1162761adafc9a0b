"""Rigs against real repositories and a real Celery worker."""

import subprocess
import threading
from pathlib import Path

import pytest
from django.db import connection, transaction

from events.models import Event
from rigs import git, operations, services
from rigs.models import Rig
from tests.conftest import git as run_git
from tests.rigs.helpers import commit_file, register, wait_for, wait_rig_state

pytestmark = pytest.mark.django_db(transaction=True)


def request_rig(repository, slug, **kw):
    with transaction.atomic():
        return services.rig_request(repository=repository, slug=slug, **kw)


def test_provision_and_teardown_happy_path(git_repo, celery_worker):
    repository = register(git_repo)
    main_tip = run_git(git_repo, "rev-parse", "main")
    rig = wait_rig_state(request_rig(repository, "api"), Rig.State.READY, Rig.State.FAILED)
    assert rig.state == Rig.State.READY, rig.failure_reason
    worktree = Path(rig.worktree_path)
    assert (worktree / "auth" / "tokens.py").is_file()
    assert run_git(worktree, "rev-parse", "--abbrev-ref", "HEAD") == "rig/api"
    assert rig.base_commit == main_tip == rig.head_commit
    assert rig.progress == 100 and rig.provision_seconds > 0
    kinds = list(Event.objects.filter(rig_id=rig.id).values_list("kind", "payload"))
    moves = {(p["from"], p["to"]): p for k, p in kinds if k == "rig.state"}
    assert moves[("requested", "provisioning")]["progress"] == 10
    assert moves[("provisioning", "ready")]["progress"] == 100
    assert moves[("provisioning", "ready")]["reason"] == "provisioned"

    services.rig_teardown_request(rig=rig)
    wait_rig_state(rig, Rig.State.ARCHIVED)
    assert not worktree.exists()
    assert not git.branch_exists(git_repo, "rig/api")
    assert Rig.objects.filter(pk=rig.pk).exists()  # archived rigs keep their record


def test_teardown_refused_with_unmerged_commits_then_forced_keeps_archive(git_repo, celery_worker):
    repository = register(git_repo)
    rig = wait_rig_state(request_rig(repository, "api"), Rig.State.READY)
    worktree = Path(rig.worktree_path)
    sha = commit_file(worktree, "auth/tokens.py", "def make_token(user):\n    return 'v2'\n")
    operations.rig_sync_run(rig.id)
    rig.refresh_from_db()
    assert rig.ahead == 1 and rig.head_commit == sha
    with pytest.raises(services.TeardownRefused, match="1 commit"):
        services.rig_teardown_request(rig=rig)

    # Even when the last sync is stale, the worker re-checks on disk and refuses.
    commit_file(worktree, "more.txt", "x")
    result = operations.rig_teardown_run(rig.id)
    assert "Refusing" in result and "2 commit" in result
    rig.refresh_from_db()
    assert rig.state == Rig.State.READY and worktree.exists()

    (worktree / "scratch.txt").write_text("uncommitted idea\n")
    services.rig_teardown_request(rig=rig, force=True)
    wait_rig_state(rig, Rig.State.ARCHIVED)
    refs = run_git(
        git_repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/gastown/archive/api/"
    ).splitlines()
    assert len(refs) == 1
    archived = refs[0].split()[1]
    # The archive holds the commits and the uncommitted file, and is reachable.
    assert run_git(git_repo, "show", f"{archived}:scratch.txt") == "uncommitted idea"
    assert run_git(git_repo, "merge-base", "--is-ancestor", sha, archived) == ""
    assert not worktree.exists()


def test_teardown_refused_with_dirty_tree(git_repo, celery_worker):
    repository = register(git_repo)
    rig = wait_rig_state(request_rig(repository, "docs"), Rig.State.READY)
    (Path(rig.worktree_path) / "docs" / "index.md").write_text("edited\n")
    operations.rig_sync_run(rig.id)
    rig.refresh_from_db()
    assert rig.dirty
    with pytest.raises(services.TeardownRefused, match="uncommitted"):
        services.rig_teardown_request(rig=rig)
    message = operations.rig_teardown_run(rig.id)
    assert "docs/index.md" in message
    rig.refresh_from_db()
    assert rig.state == Rig.State.READY and "docs/index.md" in rig.failure_reason


def test_sixteen_concurrent_provisions_on_one_repository(git_repo, celery_worker):
    repository = register(git_repo)
    rigs = [request_rig(repository, f"r{i}") for i in range(16)]
    for rig in rigs:
        wait_rig_state(rig, Rig.State.READY, Rig.State.FAILED, timeout=120)
    assert [r.state for r in rigs] == [Rig.State.READY] * 16, [r.failure_reason for r in rigs]
    listed = {w.branch for w in git.worktree_list(git_repo)}
    assert {f"rig/r{i}" for i in range(16)} <= listed


def test_sparse_rig_checks_out_only_its_paths(git_repo, celery_worker):
    repository = register(git_repo)
    rig = request_rig(repository, "auth-only", scope=["auth/**"], sparse=True)
    wait_rig_state(rig, Rig.State.READY, Rig.State.FAILED)
    assert rig.state == Rig.State.READY, rig.failure_reason
    files = {
        p.relative_to(rig.worktree_path).as_posix()
        for p in Path(rig.worktree_path).rglob("*")
        if p.is_file() and ".git" not in p.parts
    }
    assert files == {"auth/tokens.py", "README.md"}  # cone mode keeps the root's files


def test_failed_provision_records_why_and_can_be_retried(git_repo, celery_worker):
    repository = register(git_repo, setup_command="echo preparing; echo 'pip: boom' >&2; exit 3")
    rig = wait_rig_state(request_rig(repository, "api"), Rig.State.READY, Rig.State.FAILED)
    assert rig.state == Rig.State.FAILED
    assert "exited with 3" in rig.failure_reason and "pip: boom" in rig.failure_reason
    repository.setup_command = "touch .setup-done"
    repository.save()
    services.rig_retry(rig=rig)
    wait_rig_state(rig, Rig.State.READY, Rig.State.FAILED)
    assert rig.state == Rig.State.READY
    assert (Path(rig.worktree_path) / ".setup-done").exists()
    assert rig.provision_attempts == 2


def test_copy_and_link_files(git_repo, celery_worker):
    (git_repo / ".env").write_text("SECRET=1\n")
    (git_repo / "shared").mkdir()
    (git_repo / "shared" / "cache.txt").write_text("c")
    repository = register(git_repo, copy_files=[".env"], link_files=["shared"])
    rig = wait_rig_state(request_rig(repository, "api"), Rig.State.READY)
    worktree = Path(rig.worktree_path)
    assert (worktree / ".env").read_text() == "SECRET=1\n" and not (worktree / ".env").is_symlink()
    assert (worktree / "shared").is_symlink()
    progress = Event.objects.filter(rig_id=rig.id, kind="rig.progress").values_list(
        "payload__label", flat=True
    )
    assert "copying files" in list(progress)


def test_new_bare_repository_is_made_by_the_worker(repo_root, celery_worker):
    with transaction.atomic():
        repository = services.repository_register(
            name="fresh", path=str(repo_root / "fresh.git"), init_if_missing=True
        )
    wait_for(lambda: git.is_repository(repo_root / "fresh.git"), message="bare repository")
    rig = wait_rig_state(request_rig(repository, "first"), Rig.State.READY, Rig.State.FAILED)
    assert rig.state == Rig.State.READY, rig.failure_reason


def test_interrupted_provision_is_repaired_on_retry(git_repo):
    """A worker that died mid-checkout leaves a half-made worktree; the redelivered task
    finishes it (idempotent)."""
    repository = register(git_repo)
    rig = request_rig(repository, "api")
    services.rig_transition(rig=rig, to=Rig.State.PROVISIONING)
    # Plant what a `git worktree add` killed mid-checkout leaves: the branch, a registered
    # worktree still locked as "initializing", and only part of the files.
    run_git(git_repo, "branch", "rig/api", "main")
    half = Path(rig.worktree_path)
    run_git(
        git_repo,
        "worktree",
        "add",
        "--no-checkout",
        "--lock",
        "--reason",
        "initializing",
        str(half),
        "rig/api",
    )
    (half / "README.md").write_text("# half written")
    operations.rig_provision_run(rig.id)
    rig.refresh_from_db()
    assert rig.state == Rig.State.READY, rig.failure_reason
    assert (half / "auth" / "tokens.py").exists()
    assert (half / "README.md").read_text() == "# app\n"
    assert run_git(half, "status", "--porcelain") == ""
    operations.rig_provision_run(rig.id)  # running again changes nothing
    rig.refresh_from_db()
    assert rig.state == Rig.State.READY


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="needs a database shared by processes"
)
def test_provision_killed_mid_way_then_redelivered(git_repo, tmp_path):
    """A real worker process is killed (SIGKILL) during the setup command; running the task
    again brings the rig to ready."""
    import os
    import signal
    import sys

    repository = register(git_repo, setup_command="touch started; sleep 30")
    rig = request_rig(repository, "api")
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "SECRET_KEY": "test-kill-worker",
    }
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from rigs.operations import "
            f"rig_provision_run; rig_provision_run({rig.id})",
        ],
        env={**env, "DJANGO_SETTINGS_MODULE": "gastown_site.settings"},
        cwd=Path(__file__).resolve().parents[2],
        start_new_session=True,
    )
    wait_for(lambda: (Path(rig.worktree_path) / "started").exists(), timeout=60)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    rig.refresh_from_db()
    assert rig.state == Rig.State.PROVISIONING
    repository.setup_command = "true"
    repository.save()
    operations.rig_provision_run(rig.id)
    rig.refresh_from_db()
    assert rig.state == Rig.State.READY, rig.failure_reason


def test_sync_reads_branch_state(git_repo):
    repository = register(git_repo)
    rig = request_rig(repository, "api")
    operations.rig_provision_run(rig.id)
    worktree = Path(Rig.objects.get(pk=rig.pk).worktree_path)
    commit_file(worktree, "auth/tokens.py", "def make_token(user):\n    return 'v2'\n")
    commit_file(git_repo, "README.md", "# moved on\n")  # the target moves too
    (worktree / "untracked.txt").write_text("x")
    rig = operations.rig_sync_run(rig.id)
    assert (rig.ahead, rig.behind, rig.dirty) == (1, 1, True)
    assert rig.changed_files == [
        {"path": "auth/tokens.py", "added": 1, "deleted": 1, "status": "M"}
    ]
    assert Event.objects.filter(kind="rig.state").exists()


def test_heartbeat_and_stall_detection(git_repo, settings):
    settings.GASTOWN_HEARTBEAT_LIMIT_SECONDS = 60
    repository = register(git_repo)
    rig = request_rig(repository, "api")
    operations.rig_provision_run(rig.id)
    rig.refresh_from_db()
    services.rig_heartbeat(rig=rig)
    assert rig.state == Rig.State.WORKING
    from datetime import timedelta

    from django.utils import timezone

    assert services.rigs_mark_stalled() == []
    later = timezone.now() + timedelta(seconds=61)
    assert [r.pk for r in services.rigs_mark_stalled(now=later)] == [rig.pk]
    rig.refresh_from_db()
    assert rig.state == Rig.State.STALLED
    services.rig_heartbeat(rig=rig)
    assert rig.state == Rig.State.WORKING
    moves = [(e.payload["from"], e.payload["to"]) for e in Event.objects.filter(kind="rig.state")]
    assert ("working", "stalled") in moves and ("stalled", "working") in moves


def test_reconcile_reports_and_repairs_planted_drift(git_repo, settings):
    repository = register(git_repo)
    rigs = {}
    for slug in ("gone", "moved"):
        rigs[slug] = request_rig(repository, slug)
        operations.rig_provision_run(rigs[slug].id)
        rigs[slug].refresh_from_db()
    # 1. a worktree with no rig, holding an unmerged commit
    orphan = Path(settings.GASTOWN_WORKTREE_ROOT) / repository.name / "orphan"
    run_git(git_repo, "worktree", "add", "-q", "-b", "rig/orphan", str(orphan), "main")
    commit_file(orphan, "orphan.txt", "work")
    # 2. a rig whose worktree vanished
    subprocess.run(["rm", "-rf", rigs["gone"].worktree_path], check=True)
    # 3. a branch moved outside Gas Town
    commit_file(Path(rigs["moved"].worktree_path), "x.txt", "x")

    report = operations.reconcile_run(repository_id=repository.id)
    kinds = sorted(d.kind for d in report.drifts)
    assert kinds == ["branch_moved", "orphan_worktree", "worktree_missing"]
    assert not any(d.repaired for d in report.drifts)

    report = operations.reconcile_run(repository_id=repository.id, repair=True)
    by_kind = {d.kind: d for d in report.drifts}
    assert "kept" in by_kind["orphan_worktree"].detail and orphan.exists()  # unmerged work kept
    assert by_kind["worktree_missing"].repaired
    assert Path(rigs["gone"].worktree_path, "auth", "tokens.py").exists()
    rigs["moved"].refresh_from_db()
    assert rigs["moved"].ahead == 1
    assert sorted(d.kind for d in operations.reconcile_run(repository_id=repository.id).drifts) == [
        "orphan_worktree"
    ]


def test_two_workers_racing_on_one_provision(git_repo):
    repository = register(git_repo)
    rig = request_rig(repository, "api")
    errors = []

    def provision():
        try:
            operations.rig_provision_run(rig.id)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=provision) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rig.refresh_from_db()
    assert not errors and rig.state == Rig.State.READY
    assert rig.provision_attempts == 1


def test_a_provision_whose_task_was_lost_is_kicked_again(git_repo, monkeypatch):
    """A task lost with its worker (Redis hands an unacknowledged one out again only after an
    hour) or with the broker: the periodic kick provisions again the rigs that have not moved
    for a minute; the rig's lock makes a duplicate of a provision still running skip."""
    from datetime import timedelta

    from django.utils import timezone

    from rigs import tasks
    from rigs.selectors import rigs_provision_stranded

    repository = register(git_repo)
    fresh, lost = request_rig(repository, "fresh"), request_rig(repository, "lost")
    Rig.objects.filter(pk=lost.pk).update(updated_at=timezone.now() - timedelta(seconds=61))
    assert rigs_provision_stranded() == [lost.id]
    sent = []
    monkeypatch.setattr(tasks.rig_provision, "delay", sent.append)
    assert tasks.rig_provisions_kick() == 1 and sent == [lost.id]
    operations.rig_provision_run(lost.id)
    assert Rig.objects.get(pk=lost.pk).state == Rig.State.READY
    assert Rig.objects.get(pk=fresh.pk).state == Rig.State.REQUESTED
