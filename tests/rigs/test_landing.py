"""rigs.landing (reading a landed change) and rigs.operations.rig_rebase_run (keeping an idle rig
current after a landing), on real repositories in tmp_path."""

from pathlib import Path

import pytest
from django.db import transaction

from events.models import Event
from rigs import git, landing, operations, services, tasks
from rigs.models import Repository, Rig
from tests.conftest import git as run_git
from tests.rigs.helpers import commit_file, register, wait_rig_state

TOKENS_V2 = "def make_token(user):\n    return f'v2:{user}:signed'\n"


def branch(repo: Path, name: str, start: str, path: str, content: str) -> str:
    """A commit of `path` on branch `name`, made from `start` without touching main."""
    run_git(repo, "branch", name, start)
    run_git(repo, "checkout", "-q", name)
    tip = commit_file(repo, path, content, f"{name}: {path}")
    run_git(repo, "checkout", "-q", "main")
    return tip


def unsaved_rig(pk: int, **kw) -> Rig:
    """The fields a sync records (no database needed to forecast)."""
    kw.setdefault("branch", f"rig/r{pk}")
    kw.setdefault("behind", 0)
    return Rig(id=pk, slug=f"r{pk}", **kw)


@pytest.fixture
def landed(git_repo: Path) -> dict:
    """main moves by two commits: an interface change, then a docs line."""
    old = run_git(git_repo, "rev-parse", "main")
    commit_file(git_repo, "auth/tokens.py", TOKENS_V2, "tokens v2")
    new = commit_file(git_repo, "docs/tokens.md", "# tokens\nsigned now\n", "docs")
    repository = Repository(path=str(git_repo), target_branch="main")
    change = landing.landed_change_read(
        repository=repository, target_branch="main", old_tip=old, new_tip=new
    )
    return {"repo": git_repo, "old": old, "new": new, "change": change}


def test_read_gives_files_lines_symbols_and_commits(landed):
    change = landed["change"]
    assert change.paths == ["auth/tokens.py", "docs/tokens.md"]
    tokens = change.files["auth/tokens.py"]
    assert (tokens.added, tokens.deleted, tokens.status) == (1, 1, "M")
    assert change.files["docs/tokens.md"].status == "A"
    assert change.symbols["auth/tokens.py"] == ["make_token"]
    assert change.commits == 2
    assert change.range == f"{landed['old'][:12]}..{landed['new'][:12]}"
    assert change.file_stats(["docs/tokens.md"]) == [
        {"path": "docs/tokens.md", "added": 2, "deleted": 0, "status": "A"}
    ]


def test_read_of_an_empty_landing_has_no_files(git_repo):
    tip = run_git(git_repo, "rev-parse", "main")
    change = landing.landed_change_read(
        repository=Repository(path=str(git_repo)), target_branch="main", old_tip=tip, new_tip=tip
    )
    assert change.files == {} and change.symbols == {} and change.commits == 0


def test_forecasts_conflicts_and_behind_from_git(landed):
    repo, old = landed["repo"], landed["old"]
    clash = branch(repo, "rig/clash", old, "auth/tokens.py", "def make_token(u):\n    return 1\n")
    apart = branch(repo, "rig/apart", old, "frontend/app.js", "app()\n")
    rigs = [
        # behind 1 as of its last sync: git is asked, whatever it edits
        unsaved_rig(1, head_commit=clash, target_commit=old, behind=1),
        unsaved_rig(2, head_commit=apart, target_commit=old, behind=1),
        # no head recorded: its branch tip is read
        unsaved_rig(3, branch="rig/apart"),
        # nothing to read
        unsaved_rig(4, branch="rig/gone"),
    ]
    forecasts = landing.landed_change_forecasts(landed["change"], rigs)
    assert forecasts[1] == landing.Forecast(["auth/tokens.py"], 2)
    assert forecasts[2] == landing.Forecast([], 2)
    assert forecasts[3] == landing.Forecast([], 2)
    assert forecasts[4] == landing.Forecast([], 0)


def test_forecast_skips_merge_tree_for_a_rig_that_cannot_conflict(landed, monkeypatch):
    """On top of the target it last saw, editing none of the paths changed since: no merge-tree,
    and the distance is the commits since that base (read once per distinct base)."""
    repo, old, change = landed["repo"], landed["old"], landed["change"]
    middle = run_git(repo, "rev-parse", "main~1")  # between old and new: one commit since
    heads = {
        base: branch(repo, f"rig/on-{base[:7]}", base, "frontend/app.js", "app()\n")
        for base in (old, middle)
    }
    calls = []
    monkeypatch.setattr(git, "merge_tree", lambda *a: calls.append(a))
    real_count = git.rev_count
    monkeypatch.setattr(git, "rev_count", lambda *a: calls.append(a) or real_count(*a))
    edits = [{"path": "frontend/app.js", "added": 1, "deleted": 0, "status": "A"}]
    rigs = [
        unsaved_rig(pk, head_commit=heads[base], target_commit=base, changed_files=edits)
        for pk, base in enumerate([old, middle, middle, old], start=1)
    ]
    forecasts = landing.landed_change_forecasts(change, rigs)
    assert [forecasts[pk].behind for pk in (1, 2, 3, 4)] == [2, 1, 1, 2]
    assert all(f.conflicts == [] for f in forecasts.values())
    assert len(calls) == 1  # one rev-list for the middle base; never merge-tree


def test_forecast_asks_git_when_the_rig_edits_a_path_that_changed(landed):
    repo, old = landed["repo"], landed["old"]
    clash = branch(repo, "rig/clash", old, "auth/tokens.py", "def make_token(u):\n    return 1\n")
    edits = [{"path": "auth/tokens.py", "added": 1, "deleted": 1, "status": "M"}]
    rig = unsaved_rig(1, head_commit=clash, target_commit=old, changed_files=edits)
    forecast = landing.landed_change_forecasts(landed["change"], [rig])[1]
    assert forecast == landing.Forecast(["auth/tokens.py"], 2)


def test_forecast_of_a_rig_on_a_base_the_target_never_had(landed):
    repo, old = landed["repo"], landed["old"]
    elsewhere = branch(repo, "rig/elsewhere", old, "frontend/app.js", "app()\n")
    rig = unsaved_rig(1, head_commit=elsewhere, target_commit=elsewhere)  # not an ancestor
    assert landing.landed_change_forecasts(landed["change"], [rig])[1] == landing.Forecast([], 2)


def test_excerpts_once_per_set_of_paths(landed, monkeypatch):
    calls = []
    real = git.diff_excerpt
    monkeypatch.setattr(git, "diff_excerpt", lambda *a: calls.append(a) or real(*a))
    sets = [["auth/tokens.py"], [], ["auth/tokens.py"], ["auth/tokens.py", "docs/tokens.md"]]
    excerpts = landing.landed_change_excerpts(landed["change"], sets, max_lines=10)
    assert len(calls) == 2
    assert set(excerpts) == {("auth/tokens.py",), ("auth/tokens.py", "docs/tokens.md")}
    tokens = excerpts[("auth/tokens.py",)]
    assert "+    return f'v2:{user}:signed'" in tokens and "docs/tokens.md" not in tokens
    both = excerpts[("auth/tokens.py", "docs/tokens.md")].splitlines()
    assert len(both) == 11 and both[-1] == "... (6 more lines)"


# --- rig_rebase_run: an idle rig kept current, under its lock, with a sync recorded -----------


def provisioned(repository, slug: str) -> Rig:
    with transaction.atomic():
        rig = services.rig_request(repository=repository, slug=slug)
    operations.rig_provision_run(rig.id)
    wait_rig_state(rig, Rig.State.READY, Rig.State.FAILED)
    assert rig.state == Rig.State.READY, rig.failure_reason
    return rig


@pytest.fixture
def behind(git_repo, transactional_db) -> dict:
    """A ready rig with a commit of its own, then main moves on (the rig is one behind)."""
    rig = provisioned(register(git_repo), "idle")
    own = commit_file(Path(rig.worktree_path), "frontend/app.js", "app()\n", "idle: app")
    operations.rig_sync_run(rig.id)
    tip = commit_file(git_repo, "auth/tokens.py", TOKENS_V2, "tokens v2")
    rig.refresh_from_db()
    assert (rig.head_commit, rig.ahead) == (own, 1)
    return {"rig": rig, "own": own, "tip": tip, "repo": git_repo}


def head_of(rig: Rig) -> str:
    return run_git(Path(rig.worktree_path), "rev-parse", "HEAD")


@pytest.mark.django_db(transaction=True)
def test_rebase_moves_the_worktree_and_records_a_sync(behind):
    rig, tip = behind["rig"], behind["tip"]
    before = Event.objects.filter(rig_id=rig.id, kind="rig.branch").count()
    assert operations.rig_rebase_run(rig=rig, onto=tip) is True
    head = head_of(rig)
    assert run_git(behind["repo"], "rev-parse", f"{head}~1") == tip  # its commit, on the tip
    rig.refresh_from_db()
    assert (rig.head_commit, rig.target_commit, rig.ahead, rig.behind) == (head, tip, 1, 0)
    assert rig.last_synced_at is not None and rig.dirty is False
    assert [f["path"] for f in rig.changed_files] == ["frontend/app.js"]
    assert Event.objects.filter(rig_id=rig.id, kind="rig.branch").count() == before + 1


@pytest.mark.django_db(transaction=True)
def test_rebase_takes_the_rigs_lock_a_second_call_skips(behind, monkeypatch):
    rig, tip = behind["rig"], behind["tip"]
    second = []
    real = git.rebase_worktree

    def rebase_while_another_delivery_arrives(worktree, onto):
        second.append(operations.rig_rebase_run(rig=rig, onto=onto))
        return real(worktree, onto)

    monkeypatch.setattr(git, "rebase_worktree", rebase_while_another_delivery_arrives)
    assert operations.rig_rebase_run(rig=rig, onto=tip) is True
    assert second == [False]
    with operations.rig_exclusive(rig) as mine:  # a worker holding the rig (provision, teardown)
        assert mine
        assert operations.rig_rebase_run(rig=rig, onto=tip) is False


@pytest.mark.django_db(transaction=True)
def test_rebase_leaves_a_dirty_or_conflicting_worktree_alone(behind):
    rig, tip, own = behind["rig"], behind["tip"], behind["own"]
    worktree = Path(rig.worktree_path)
    (worktree / "scratch.txt").write_text("work in progress\n")
    assert operations.rig_rebase_run(rig=rig, onto=tip) is False
    assert head_of(rig) == own
    (worktree / "scratch.txt").unlink()
    commit_file(worktree, "auth/tokens.py", "def make_token(u):\n    return 0\n", "clash")
    mine = head_of(rig)
    assert operations.rig_rebase_run(rig=rig, onto=tip) is False
    assert head_of(rig) == mine and not git.is_dirty(worktree)  # the rebase was aborted
    rig.refresh_from_db()
    assert rig.head_commit == own  # nothing recorded: no sync ran


@pytest.mark.django_db(transaction=True)
def test_rebase_task_and_a_rig_without_worktree(behind):
    rig, tip = behind["rig"], behind["tip"]
    assert tasks.rig_rebase.apply(args=(rig.id, tip)).get() is True
    assert run_git(behind["repo"], "rev-parse", f"{head_of(rig)}~1") == tip
    Rig.objects.filter(pk=rig.pk).update(worktree_path=str(behind["repo"].parent / "missing"))
    rig.refresh_from_db()
    assert operations.rig_rebase_run(rig=rig, onto=tip) is False
