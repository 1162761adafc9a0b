"""Fresh facts: a rig's head and ahead/behind read from git at read time (`rigs.selectors`), the
batched git reads behind them (`git.branch_tips`, `git.ahead_behind`) and the bounded
`git.worktree_dirty`. Real repositories in tmp_path; no mocks but a call counter."""

import importlib
from pathlib import Path

import pytest
from django.core.cache import cache
from django.utils import timezone

from rigs import git as g
from rigs import selectors
from rigs.models import Rig
from tests import factories
from tests.conftest import git as run_git
from tests.rigs.helpers import commit_file

pytestmark = pytest.mark.django_db

run_module = importlib.import_module("rigs.git.run")  # `rigs.git.run` is also the function


@pytest.fixture(autouse=True)
def empty_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def counted(monkeypatch) -> list[list[str]]:
    """Every git command started (through rigs.git.run._execute), in order."""
    calls: list[list[str]] = []
    real = run_module._execute

    def spy(cwd, args, *rest, **kw):
        calls.append([str(a) for a in args])
        return real(cwd, args, *rest, **kw)

    monkeypatch.setattr(run_module, "_execute", spy)
    return calls


def repo_with_rigs(tmp_path: Path, slugs: list[str]):
    """A real repository on `main` and a rig (with a real worktree) per slug."""
    path = tmp_path / "app"
    path.mkdir()
    run_git(path, "init", "-q", "-b", "main")
    commit_file(path, "README.md", "# app\n", "initial")
    repository = factories.repository(name="app", path=str(path))
    rigs = []
    for slug in slugs:
        worktree = tmp_path / "worktrees" / slug
        run_git(path, "worktree", "add", "-q", "-b", f"rig/{slug}", str(worktree), "main")
        rigs.append(
            factories.rig(
                repository=repository,
                slug=slug,
                state=Rig.State.WORKING,
                worktree_path=str(worktree),
            )
        )
    return path, repository, rigs


def rev_list_counts(repo: Path, branch: str) -> tuple[int, int]:
    behind, ahead = run_git(repo, "rev-list", "--left-right", "--count", f"main...{branch}").split()
    return int(ahead), int(behind)


def test_branch_tips_reads_exact_branches_in_one_call(tmp_path, counted):
    path, _, _ = repo_with_rigs(tmp_path, ["a", "ab"])
    run_git(path, "branch", "rig/x/deeper", "main")  # the pattern rig/x also matches it
    counted.clear()
    tips = g.branch_tips(path, ["main", "rig/a", "rig/ab", "rig/x"])
    assert set(tips) == {"main", "rig/a", "rig/ab"}
    assert tips["rig/a"] == run_git(path, "rev-parse", "rig/a")
    assert len(counted) == 1 and counted[0][0] == "for-each-ref"
    assert g.branch_tips(path, []) == {}


def test_worktree_dirty_is_read_now_and_none_when_unreadable(tmp_path):
    _, _, (rig,) = repo_with_rigs(tmp_path, ["api"])
    worktree = Path(rig.worktree_path)
    assert g.worktree_dirty(worktree) is False
    (worktree / "notes.txt").write_text("untracked\n")
    assert g.worktree_dirty(worktree) is True
    assert g.worktree_dirty(tmp_path / "gone") is None
    (tmp_path / "plain").mkdir()
    assert g.worktree_dirty(tmp_path / "plain") is None  # not a worktree


def test_positions_follow_a_commit_with_no_sync(tmp_path, counted):
    path, _, (api, docs) = repo_with_rigs(tmp_path, ["api", "docs"])
    commit_file(Path(api.worktree_path), "api.py", "x = 1\n", "api work")
    commit_file(Path(api.worktree_path), "api2.py", "y = 2\n", "more api work")
    commit_file(path, "main.txt", "main moved\n", "main moves")
    rigs = list(Rig.objects.filter(pk__in=[api.pk, docs.pk]).select_related("repository"))
    counted.clear()
    before = timezone.now()
    positions = selectors.rig_positions(rigs)
    assert (positions[api.id].ahead, positions[api.id].behind) == rev_list_counts(path, "rig/api")
    assert (positions[api.id].ahead, positions[api.id].behind) == (2, 1)
    assert (positions[docs.id].ahead, positions[docs.id].behind) == (0, 1)
    assert positions[api.id].head == run_git(path, "rev-parse", "rig/api")
    assert positions[api.id].fresh and positions[api.id].read_at >= before
    assert positions[api.id].as_of == "read from git just now"
    # one for-each-ref for the heads, one rev-list per distinct (head, target) pair
    assert [c[0] for c in counted] == ["for-each-ref", "rev-list", "rev-list"]
    counted.clear()
    selectors.rig_positions(rigs)  # the counts of two commits never change: cached
    assert [c[0] for c in counted] == ["for-each-ref"]
    # nothing was recorded: the rows still say what the (absent) last sync said
    api.refresh_from_db()
    assert (api.ahead, api.behind, api.last_synced_at) == (0, 0, None)


def test_positions_fall_back_to_the_last_sync_and_say_how_old(tmp_path):
    never = factories.rig(state=Rig.State.WORKING, ahead=3, behind=1, head_commit="c" * 40)
    synced_at = timezone.now().replace(hour=9, minute=7)
    synced = factories.rig(
        state=Rig.State.WORKING, ahead=5, behind=2, head_commit="d" * 40, last_synced_at=synced_at
    )
    positions = selectors.rig_positions([never, synced])  # their repositories do not exist
    assert positions[never.id] == selectors.RigPosition("c" * 40, 3, 1, None, False)
    assert positions[never.id].as_of == "never synced"
    assert not positions[synced.id].fresh
    assert positions[synced.id].as_of == "as of the last sync at 09:07 UTC"


def test_positions_of_rigs_not_on_disk_are_the_recorded_ones(tmp_path, counted):
    _, repository, (api,) = repo_with_rigs(tmp_path, ["api"])
    requested = factories.rig(repository=repository, slug="new", state=Rig.State.REQUESTED)
    archived = factories.rig(repository=repository, slug="old", state=Rig.State.ARCHIVED, ahead=4)
    counted.clear()
    positions = selectors.rig_positions([api, requested, archived])
    assert positions[api.id].fresh
    assert not positions[requested.id].fresh and positions[archived.id].ahead == 4
    assert [c[0] for c in counted] == ["for-each-ref", "rev-list"]


def test_rig_dirty_reads_the_worktree_else_the_recorded_value(tmp_path):
    _, _, (api,) = repo_with_rigs(tmp_path, ["api"])
    read = selectors.rig_dirty(api)
    assert (read.dirty, read.fresh) == (False, True)
    (Path(api.worktree_path) / "wip.py").write_text("half done\n")
    assert selectors.rig_dirty(api).dirty is True
    gone = factories.rig(state=Rig.State.WORKING, worktree_path=str(tmp_path / "gone"), dirty=True)
    read = selectors.rig_dirty(gone)
    assert (read.dirty, read.fresh, read.as_of) == (True, False, "never synced")
