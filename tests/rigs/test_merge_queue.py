"""The merge queue against real repositories (and a real worker where it matters)."""

import subprocess
import threading
from pathlib import Path

import pytest
from django.db import connection, transaction
from django.utils import timezone

from rigs import git, merge_queue, operations, services, signals
from rigs.models import MergeQueueLease, MergeRequest, Rig
from tests.conftest import git as run_git
from tests.rigs.helpers import commit_file, register, wait_for, wait_rig_state

pytestmark = pytest.mark.django_db(transaction=True)
S = MergeRequest.State


def make_rig(repository, slug) -> Rig:
    with transaction.atomic():
        rig = services.rig_request(repository=repository, slug=slug)
    operations.rig_provision_run(rig.id)  # (a running worker may be doing it already)
    wait_rig_state(rig, Rig.State.READY, Rig.State.FAILED)
    assert rig.state == Rig.State.READY, rig.failure_reason
    return rig


def rig_with_change(repository, slug, path, content) -> Rig:
    rig = make_rig(repository, slug)
    commit_file(Path(rig.worktree_path), path, content, f"{slug}: edit {path}")
    operations.rig_sync_run(rig.id)
    rig.refresh_from_db()
    return rig


def request_merge(rig, **kw) -> MergeRequest:
    with transaction.atomic():
        return services.merge_request_create(
            repository=rig.repository,
            source_branch=rig.branch,
            target_branch=rig.repository.target_branch,
            rig=rig,
            **kw,
        )


def process(repository):
    return merge_queue.merge_queue_process(repository.id, repository.target_branch)


def expected_merge_tree(repo: Path, tmp_path: Path, branches: list[str]) -> str:
    """What plain `git merge` of these branches into main gives."""
    clone = tmp_path / "expected"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    for branch in branches:
        run_git(clone, "fetch", "-q", "origin", f"{branch}:{branch}")
        run_git(clone, "merge", "-q", "--no-ff", "--no-edit", branch)
    return run_git(clone, "rev-parse", "HEAD^{tree}")


def test_clean_merge_lands_with_the_tree_git_merge_gives(git_repo, tmp_path, celery_worker):
    repository = register(git_repo)
    api = rig_with_change(repository, "api", "auth/tokens.py", "def make_token(u):\n    return 2\n")
    docs = rig_with_change(repository, "docs", "docs/index.md", "new docs\n")
    expected = expected_merge_tree(git_repo, tmp_path, ["rig/api", "rig/docs"])
    first, second = request_merge(api), request_merge(docs)
    for mr in (first, second):
        wait_for(
            lambda mr=mr: MergeRequest.objects.get(pk=mr.pk).state == S.MERGED,
            timeout=60,
            message="merge",
        )
    assert run_git(git_repo, "rev-parse", "main^{tree}") == expected
    first.refresh_from_db()
    second.refresh_from_db()
    api.refresh_from_db()
    assert first.merge_commit and git.is_ancestor(git_repo, first.merge_commit, "main")
    assert first.changed_paths == ["auth/tokens.py"]
    assert second.changed_paths == ["docs/index.md"]
    assert api.state == Rig.State.MERGED
    assert not [w for w in git.worktree_list(git_repo) if "gastown-tmp" in str(w.path)]


def test_conflicting_request_is_conflicted_and_target_untouched(git_repo):
    repository = register(git_repo)
    one = rig_with_change(repository, "one", "auth/tokens.py", "def make_token(u):\n    return 1\n")
    two = rig_with_change(repository, "two", "auth/tokens.py", "def make_token(u):\n    return 2\n")
    request_merge(one)
    process(repository)
    tip = run_git(git_repo, "rev-parse", "main")
    mr = request_merge(two)
    process(repository)
    mr.refresh_from_db()
    two.refresh_from_db()
    assert mr.state == S.CONFLICTED
    assert mr.conflicts == ["auth/tokens.py"]
    assert mr.target_commit == tip
    assert run_git(git_repo, "rev-parse", "main") == tip
    assert two.state == Rig.State.WORKING


def test_failing_gate_blocks_landing_and_keeps_the_log(git_repo):
    repository = register(
        git_repo, gate_command="echo running tests; echo 'FAILED test_tokens' >&2; exit 4"
    )
    rig = rig_with_change(repository, "api", "auth/tokens.py", "broken\n")
    tip = run_git(git_repo, "rev-parse", "main")
    mr = request_merge(rig)
    process(repository)
    mr.refresh_from_db()
    assert mr.state == S.FAILED and mr.gate_exit_code == 4
    assert "FAILED test_tokens" in mr.gate_log_tail
    assert run_git(git_repo, "rev-parse", "main") == tip
    assert git.worktree_list(git_repo)[1:] == [
        w for w in git.worktree_list(git_repo)[1:] if "gastown-tmp" not in str(w.path)
    ]


def test_gate_log_tail_is_limited(git_repo):
    repository = register(git_repo, gate_command="seq 1 1000; exit 1")
    rig = rig_with_change(repository, "api", "x.txt", "x")
    mr = request_merge(rig)
    process(repository)
    mr.refresh_from_db()
    lines = mr.gate_log_tail.splitlines()
    assert len(lines) == 200 and lines[-1] == "1000"


def test_target_moved_during_gate_is_recomputed_not_overwritten(git_repo, monkeypatch):
    repository = register(git_repo, gate_command="true")
    rig = rig_with_change(repository, "api", "auth/tokens.py", "v2\n")
    real_gate = merge_queue.gate_run
    moved = {}

    def gate_then_someone_pushes(repository, commit):
        if not moved:
            moved["sha"] = commit_file(git_repo, "hotfix.txt", "urgent\n", "hotfix")
        return real_gate(repository, commit)

    monkeypatch.setattr(merge_queue, "gate_run", gate_then_someone_pushes)
    mr = request_merge(rig)
    process(repository)
    mr.refresh_from_db()
    assert mr.state == S.MERGED
    assert git.is_ancestor(git_repo, moved["sha"], "main")  # the hotfix was not lost
    assert git.is_ancestor(git_repo, mr.source_commit, "main")
    assert mr.attempts == 2


def count_gates(monkeypatch) -> list[str]:
    """The candidates gated, in order. (Counted outside the gate: a sandboxed gate cannot
    write anywhere but its own checkout.)"""
    gated: list[str] = []
    real_gate = merge_queue.gate_run

    def counting_gate(repository, commit):
        gated.append(commit)
        return real_gate(repository, commit)

    monkeypatch.setattr(merge_queue, "gate_run", counting_gate)
    return gated


def test_batch_with_one_bad_request_bisects_and_lands_the_rest(git_repo, monkeypatch):
    gated = count_gates(monkeypatch)
    repository = register(
        git_repo,
        batch_size=5,
        gate_command="test ! -e BAD || { echo 'BAD found'; exit 1; }",
    )
    rigs = [rig_with_change(repository, f"r{i}", f"f{i}.txt", f"{i}\n") for i in range(5)]
    commit_file(Path(rigs[3].worktree_path), "BAD", "breaks the build\n")
    mrs = [request_merge(rig) for rig in rigs]
    process(repository)
    states = {mr.rig.slug: MergeRequest.objects.get(pk=mr.pk).state for mr in mrs}
    assert states == {
        "r0": S.MERGED,
        "r1": S.MERGED,
        "r2": S.MERGED,
        "r3": S.FAILED,
        "r4": S.MERGED,
    }
    bad = MergeRequest.objects.get(pk=mrs[3].pk)
    assert "BAD found" in bad.gate_log_tail
    tree = run_git(git_repo, "ls-tree", "--name-only", "main").split()
    assert {"f0.txt", "f1.txt", "f2.txt", "f4.txt"} <= set(tree) and "BAD" not in tree
    gates = len(gated)
    assert gates <= 5, f"bisect used {gates} gates for 5 requests (serial needs 5)"


def test_all_passing_batch_is_gated_once(git_repo, monkeypatch):
    gated = count_gates(monkeypatch)
    repository = register(git_repo, batch_size=4, gate_command="echo run")
    mrs = [request_merge(rig_with_change(repository, f"r{i}", f"f{i}.txt", "x")) for i in range(4)]
    process(repository)
    assert {MergeRequest.objects.get(pk=mr.pk).state for mr in mrs} == {S.MERGED}
    assert len(gated) == 1
    assert len(set(MergeRequest.objects.values_list("batch_id", flat=True))) == 1


def test_two_workers_racing_publish_each_request_once(git_repo):
    repository = register(git_repo, batch_size=2)
    mrs = [request_merge(rig_with_change(repository, f"r{i}", f"f{i}.txt", "x")) for i in range(6)]
    errors = []

    def worker():
        try:
            process(repository)
        except Exception as exc:  # pragma: no cover - reported by the assertion
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    process(repository)  # whatever was left by a loser of the lease race
    assert not errors
    assert {MergeRequest.objects.get(pk=mr.pk).state for mr in mrs} == {S.MERGED}
    subjects = run_git(git_repo, "log", "--format=%s", "main").splitlines()
    for i in range(6):
        assert sum(s.startswith(f"Merge rig/r{i} ") for s in subjects) == 1


def test_killed_worker_is_recovered_without_publishing_twice(git_repo):
    repository = register(git_repo)
    rig = rig_with_change(repository, "api", "a.txt", "a\n")
    mr = request_merge(rig)
    # A worker claimed it, published, and died before recording anything.
    services.merge_request_transition(merge_request=mr, to=S.CHECKING, claimed_by="dead:1")
    services.merge_request_transition(merge_request=mr, to=S.TESTING)
    MergeQueueLease.objects.create(
        repository=repository, target_branch="main", holder="dead:1", expires_at=timezone.now()
    )
    tip = run_git(git_repo, "rev-parse", "main")
    published = git.commit_tree(
        git_repo,
        git.merge_tree(git_repo, tip, mr.source_commit).tree,
        [tip, mr.source_commit],
        f"Merge rig/api into main (MR {mr.id})",
    )
    git.update_ref(git_repo, "refs/heads/main", published, tip)
    process(repository)
    mr.refresh_from_db()
    assert mr.state == S.MERGED
    assert run_git(git_repo, "rev-parse", "main") == published  # nothing merged twice
    # a dead worker's unpublished request is simply redone
    other = rig_with_change(repository, "docs", "b.txt", "b\n")
    mr2 = request_merge(other)
    services.merge_request_transition(merge_request=mr2, to=S.CHECKING, claimed_by="dead:2")
    process(repository)
    mr2.refresh_from_db()
    assert mr2.state == S.MERGED and git.is_ancestor(git_repo, mr2.source_commit, "main")


def test_live_lease_of_another_worker_is_respected(git_repo):
    repository = register(git_repo)
    mr = request_merge(rig_with_change(repository, "api", "a.txt", "a\n"))
    MergeQueueLease.objects.create(
        repository=repository,
        target_branch="main",
        holder="alive",
        expires_at=timezone.now() + timezone.timedelta(minutes=5),
    )
    assert process(repository) == 0
    mr.refresh_from_db()
    assert mr.state == S.QUEUED


@pytest.mark.parametrize("strategy", ["squash", "rebase"])
def test_squash_and_rebase_strategies_keep_history_linear(git_repo, strategy):
    repository = register(git_repo, merge_strategy=strategy)
    rig = make_rig(repository, "api")
    commit_file(Path(rig.worktree_path), "one.txt", "1\n", "first")
    commit_file(Path(rig.worktree_path), "two.txt", "2\n", "second")
    commit_file(git_repo, "main.txt", "m\n", "main moves on")
    operations.rig_sync_run(rig.id)
    before = run_git(git_repo, "rev-parse", "main")
    mr = request_merge(Rig.objects.get(pk=rig.pk))
    process(repository)
    mr.refresh_from_db()
    assert mr.state == S.MERGED
    merges = run_git(git_repo, "rev-list", "--merges", f"{before}..main")
    assert merges == ""
    added = run_git(git_repo, "rev-list", "--count", f"{before}..main")
    assert added == ("1" if strategy == "squash" else "2")
    assert {"one.txt", "two.txt", "main.txt"} <= set(
        run_git(git_repo, "ls-tree", "--name-only", "main").split()
    )


def test_newer_request_supersedes_queued_one(git_repo):
    repository = register(git_repo)
    rig = rig_with_change(repository, "api", "a.txt", "a\n")
    first = request_merge(rig)
    second = request_merge(Rig.objects.get(pk=rig.pk))
    first.refresh_from_db()
    assert first.state == S.SUPERSEDED and second.state == S.QUEUED
    services.merge_request_transition(merge_request=second, to=S.CHECKING)
    with pytest.raises(services.MergeInProgress):
        request_merge(Rig.objects.get(pk=rig.pk))


def test_missing_integration_branch_is_created_from_the_target(git_repo):
    repository = register(git_repo)
    rig = rig_with_change(repository, "api", "a.txt", "a\n")
    with transaction.atomic():
        mr = services.merge_request_create(
            repository=repository, source_branch=rig.branch, target_branch="convoy/auth", rig=rig
        )
    merge_queue.merge_queue_process(repository.id, "convoy/auth")
    mr.refresh_from_db()
    assert mr.state == S.MERGED
    assert git.is_ancestor(git_repo, "main", "convoy/auth")
    assert git.is_ancestor(git_repo, mr.source_commit, "convoy/auth")


def test_merge_landed_signal_carries_tips_and_paths(git_repo):
    repository = register(git_repo)
    rig = rig_with_change(repository, "api", "auth/tokens.py", "v2\n")
    old_tip = run_git(git_repo, "rev-parse", "main")
    landed = []

    def receiver(**kw):
        landed.append(kw)

    signals.merge_landed.connect(receiver, dispatch_uid="test-landed")
    try:
        mr = request_merge(rig)
        process(repository)
    finally:
        signals.merge_landed.disconnect(dispatch_uid="test-landed")
    assert len(landed) == 1
    event = landed[0]
    assert [m.pk for m in event["merge_requests"]] == [mr.pk]
    assert event["old_tip"] == old_tip
    assert event["new_tip"] == run_git(git_repo, "rev-parse", "main")
    assert event["changed_paths"] == ["auth/tokens.py"]
    assert event["target_branch"] == "main"


class Killed(BaseException):
    """A worker's death at a fault point (nothing after it runs, no `except Exception` sees it)."""


def test_worker_killed_after_update_ref_is_recorded_as_the_landing_it_was(git_repo, monkeypatch):
    """The queue writes what it will publish before `update-ref`; a worker that dies right after
    the target moved leaves that, and the next run records the landing as it was (its merge
    commit, the tip it moved from, its paths, its gate), so cascades hear of it: not an empty
    landing. (The same death in a real process: tests/faults/.)"""
    repository = register(git_repo, batch_size=2, gate_command="true")
    mrs = [request_merge(rig_with_change(repository, s, f"{s}.txt", "x\n")) for s in ("a", "b")]
    old_tip = run_git(git_repo, "rev-parse", "main")

    def die(point):
        if point == "merge.after_update_ref":
            raise Killed

    monkeypatch.setattr(merge_queue, "fault_point", die)
    with pytest.raises(Killed):
        process(repository)
    published = run_git(git_repo, "rev-parse", "main")
    assert published != old_tip
    assert {MergeRequest.objects.get(pk=m.pk).state for m in mrs} == {S.TESTING}
    MergeQueueLease.objects.update(expires_at=timezone.now())  # (a dead worker's lease)
    monkeypatch.undo()
    landed = []
    signals.merge_landed.connect(
        lambda **kw: landed.append(kw), dispatch_uid="test-recovered", weak=False
    )
    try:
        process(repository)
    finally:
        signals.merge_landed.disconnect(dispatch_uid="test-recovered")
    first, second = (MergeRequest.objects.get(pk=m.pk) for m in mrs)
    assert (first.state, second.state) == (S.MERGED, S.MERGED)
    assert (first.target_commit, second.merge_commit) == (old_tip, published)
    assert first.merge_commit == second.target_commit != old_tip
    assert first.changed_paths == ["a.txt"] and first.gate_exit_code == 0
    assert run_git(git_repo, "rev-parse", "main") == published  # nothing merged twice
    assert [(e["old_tip"], e["new_tip"], e["changed_paths"]) for e in landed] == [
        (old_tip, published, ["a.txt", "b.txt"])
    ]


def test_worker_killed_before_update_ref_is_redone(git_repo, monkeypatch):
    repository = register(git_repo)
    mr = request_merge(rig_with_change(repository, "a", "a.txt", "x\n"))
    old_tip = run_git(git_repo, "rev-parse", "main")

    def die(point):
        if point == "merge.before_update_ref":
            raise Killed

    monkeypatch.setattr(merge_queue, "fault_point", die)
    with pytest.raises(Killed):
        process(repository)
    assert run_git(git_repo, "rev-parse", "main") == old_tip
    monkeypatch.undo()
    process(repository)
    mr.refresh_from_db()
    assert mr.state == S.MERGED and mr.target_commit == old_tip and mr.attempts == 2


def test_a_dead_processes_lease_is_taken_over_at_once(git_repo):
    """A SIGKILLed worker's lease lasts minutes; a holder that is a dead process of this machine
    is not waited for (one of another machine, or a live pid, is)."""
    import os
    import socket

    repository = register(git_repo)
    dead = subprocess.Popen(["true"])
    dead.wait()
    later = timezone.now() + timezone.timedelta(minutes=20)
    for holder, taken in [
        (f"{socket.gethostname()}:{dead.pid}:abc", True),
        (f"{socket.gethostname()}:{os.getpid()}:abc", False),
        (f"elsewhere:{dead.pid}:abc", False),
    ]:
        MergeQueueLease.objects.all().delete()
        MergeQueueLease.objects.create(
            repository=repository, target_branch="main", holder=holder, expires_at=later
        )
        assert merge_queue.lease_acquire(repository, "main", "me", 60) is taken, holder
