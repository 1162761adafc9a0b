"""rigs.git against real repositories in tmp_path (no mocks: the point is git's behaviour)."""

import multiprocessing
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rigs import git as g


def commit_all(repo: Path, message: str) -> str:
    g.run(repo, "add", "-A")
    g.run(repo, "commit", "-q", "--no-gpg-sign", "-m", message)
    return g.run(repo, "rev-parse", "HEAD")


def write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)


def files_in(worktree: Path) -> set[str]:
    return {
        p.relative_to(worktree).as_posix()
        for p in worktree.rglob("*")
        if p.is_file() and ".git" not in p.relative_to(worktree).parts
    }


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository on `main` with three commits and a few directories."""
    path = g.init_repository(tmp_path / "repo")
    write(path / "README.md", "# app\n")
    write(path / "src/auth/tokens.py", "def make_token(user):\n    return user\n")
    write(path / "src/auth/deep/keys.py", "KEYS = []\n")
    write(path / "src/billing/invoice.py", "def total():\n    return 0\n")
    commit_all(path, "initial")
    write(path / "docs/index.md", "docs\n")
    commit_all(path, "docs")
    write(path / "docs/index.md", "docs v2\n")
    commit_all(path, "docs v2")
    return path


# --- running ----------------------------------------------------------------------------


def test_run_timeout_raises_git_timeout(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()  # stdin that never ends: hash-object blocks forever
    try:
        with os.fdopen(read_end, "rb") as stdin:
            started = time.monotonic()
            with pytest.raises(g.GitTimeout) as info:
                g.run(tmp_path, "hash-object", "--stdin", stdin=stdin, timeout=0.5)
        assert time.monotonic() - started < 10
        assert info.value.args_ == ["hash-object", "--stdin"]
    finally:
        os.close(write_end)


def test_run_failure_carries_command_status_and_tail(repo: Path) -> None:
    with pytest.raises(g.GitError) as info:
        g.run(repo, "rev-parse", "--verify", "no-such-ref")
    assert info.value.status == 128
    assert info.value.args_ == ["rev-parse", "--verify", "no-such-ref"]
    assert "fatal" in info.value.tail()
    assert len(info.value.tail(1).splitlines()) == 1


def test_run_refuses_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(g.GitError, match="not a directory"):
        g.run(tmp_path / "missing", "status")


def test_repository_helpers(repo: Path, tmp_path: Path) -> None:
    assert g.is_repository(repo)
    assert not g.is_repository(repo / "src")  # inside a repository is not a repository
    assert not g.is_repository(tmp_path)
    assert not g.is_repository(tmp_path / "missing")
    assert not g.is_bare(repo)
    bare = g.init_repository(tmp_path / "bare.git", bare=True)
    assert g.is_repository(bare) and g.is_bare(bare)
    assert g.common_dir(repo) == (repo / ".git").resolve()
    assert g.rev_parse(repo, "HEAD") == g.resolve_branch(repo, "main")
    assert g.rev_parse(repo, "--all") is None  # never taken as an option
    assert g.rev_parse(repo, "nope") is None


# --- ref names --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "-x",
        "--force",
        "a..b",
        "a b",
        ";rm -rf",
        "$(x)",
        "`x`",
        "x;y",
        "a\nb",
        "a\x01b",
        "x.lock",
        "x/",
        "x.",
        "a@{1}",
        "a~1",
        "a^",
        "a:b",
        "a?",
        "a*",
        "a[b",
        "a\\b",
        "",
        "@",
        "a//b",
        ".hidden",
        "HEAD",
    ],
)
def test_bad_ref_names_are_refused(name: str) -> None:
    with pytest.raises(g.InvalidRefName) as info:
        g.validate_ref_name(name)
    assert isinstance(info.value, ValueError)
    assert "invalid branch name" in str(info.value)


def test_rule_is_named_in_message() -> None:
    with pytest.raises(ValueError, match="must not start with '-'"):
        g.validate_ref_name("-delete")
    with pytest.raises(ValueError, match="whitespace"):
        g.validate_ref_name("a b")


@pytest.mark.parametrize("name", ["main", "feature/auth-login_2", "rig/v1.2", "user@host"])
def test_good_ref_names_are_accepted(name: str) -> None:
    assert g.validate_ref_name(name) == name


# --- branches and refs ------------------------------------------------------------------


def test_create_branch_is_idempotent_and_refuses_elsewhere(repo: Path) -> None:
    head = g.rev_parse(repo, "HEAD")
    first = g.rev_parse(repo, "HEAD~2")
    assert g.create_branch(repo, "rig/one", "HEAD") == head
    assert g.create_branch(repo, "rig/one", head) == head  # same place: no-op
    with pytest.raises(g.RefMoved):
        g.create_branch(repo, "rig/one", first)
    assert g.create_branch(repo, "rig/one", first, force=True) == first
    assert g.resolve_branch(repo, "rig/one") == first


def test_delete_branch(repo: Path) -> None:
    g.create_branch(repo, "gone", "HEAD~1")  # merged into HEAD
    assert g.delete_branch(repo, "gone") is True
    assert not g.branch_exists(repo, "gone")
    assert g.delete_branch(repo, "gone") is False
    tree = g.run(repo, "rev-parse", "HEAD^{tree}")
    g.create_branch(repo, "unmerged", g.commit_tree(repo, tree, ["HEAD"], "extra"))
    with pytest.raises(g.GitError, match="not fully merged"):
        g.delete_branch(repo, "unmerged")
    assert g.delete_branch(repo, "unmerged", force=True) is True


def test_commit_tree_and_update_ref_compare_and_swap(repo: Path) -> None:
    head = g.rev_parse(repo, "HEAD")
    tree = g.run(repo, "rev-parse", "HEAD^{tree}")
    new = g.commit_tree(repo, tree, [head], "land rig", "Alice", "alice@example.com")
    assert g.run(repo, "log", "-1", "--format=%an <%ae>|%cn <%ce>", new) == (
        "Alice <alice@example.com>|Gas Town <gastown@localhost>"
    )
    g.update_ref(repo, "refs/heads/main", new, head)
    assert g.resolve_branch(repo, "main") == new
    with pytest.raises(g.RefMoved):
        g.update_ref(repo, "refs/heads/main", head, head)  # stale old value
    assert g.resolve_branch(repo, "main") == new

    g.update_ref(repo, "refs/gastown/archive/rig-1", new, g.ZERO_OID)  # create
    with pytest.raises(g.RefMoved):
        g.update_ref(repo, "refs/gastown/archive/rig-1", head, g.ZERO_OID)
    with pytest.raises(g.InvalidRefName):
        g.update_ref(repo, "main", new, head)


def test_commit_message_with_shell_characters_is_verbatim(repo: Path, tmp_path: Path) -> None:
    message = (
        "$(touch pwned) `touch pwned2`; rm -rf / && echo 'x' \"y\" | cat > out\n\n"
        "--help\n-m nope\n\\n %s %n {}\n"
    )
    tree = g.run(repo, "rev-parse", "HEAD^{tree}")
    sha = g.commit_tree(repo, tree, ["HEAD"], message)
    body = g.run(repo, "cat-file", "-p", sha).split("\n\n", 1)[1]
    assert body + "\n" == message  # run() strips only the final newline
    for leftover in ("pwned", "pwned2", "out"):
        assert not (repo / leftover).exists()
        assert not (tmp_path / leftover).exists()
        assert not Path(leftover).exists()


# --- worktrees --------------------------------------------------------------------------


def test_worktree_add_list_remove(repo: Path, tmp_path: Path) -> None:
    path = tmp_path / "wt" / "one"
    g.worktree_add(repo, path, "rig/one", create_from="main")
    assert (path / "src/auth/tokens.py").is_file()
    listed = {w.path.resolve(): w for w in g.worktree_list(repo)}
    assert listed[path.resolve()].branch == "rig/one"
    assert listed[path.resolve()].head == g.rev_parse(repo, "main")
    assert not listed[path.resolve()].detached
    assert listed[repo.resolve()].branch == "main"

    write(path / "scratch.txt", "work\n")
    with pytest.raises(g.GitError):
        g.worktree_remove(repo, path)  # untracked work: git refuses without force
    g.worktree_remove(repo, path, force=True)
    assert not path.exists()
    assert path.resolve() not in {w.path.resolve() for w in g.worktree_list(repo)}
    g.worktree_remove(repo, path)  # already gone: no-op
    assert g.branch_exists(repo, "rig/one")


def test_worktree_add_requires_existing_branch_or_start(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(g.GitError, match="does not exist"):
        g.worktree_add(repo, tmp_path / "wt", "nope")
    with pytest.raises(g.InvalidRefName):
        g.worktree_add(repo, tmp_path / "wt", "--orphan", create_from="main")


def test_worktree_add_is_idempotent(repo: Path, tmp_path: Path) -> None:
    path = tmp_path / "wt"
    g.worktree_add(repo, path, "rig/a", create_from="main")
    write(path / "README.md", "edited by the agent\n")
    g.create_branch(repo, "elsewhere", "HEAD~1")
    g.worktree_add(repo, path, "rig/a", create_from="elsewhere")  # exists: nothing happens
    assert (path / "README.md").read_text() == "edited by the agent\n"
    assert len(g.worktree_list(repo)) == 2
    with pytest.raises(g.GitError, match="already a worktree"):
        g.worktree_add(repo, path, "elsewhere")


def test_worktree_add_reports_whether_it_created_the_branch(repo: Path, tmp_path: Path) -> None:
    assert g.worktree_add(repo, tmp_path / "a", "rig/a", create_from="main") is True
    assert g.resolve_branch(repo, "rig/a") == g.rev_parse(repo, "main")
    # The branch is already there (a retry after a crash): the new-rig shortcut is refused
    # by git and the careful path checks the branch out where it is, without moving it.
    g.create_branch(repo, "rig/b", "HEAD~1")
    assert g.worktree_add(repo, tmp_path / "b", "rig/b", create_from="main") is False
    assert g.resolve_branch(repo, "rig/b") == g.rev_parse(repo, "HEAD~1")
    assert g.status_porcelain(tmp_path / "b") == []
    # Registered, directory deleted, branch there: repaired, not created.
    shutil.rmtree(tmp_path / "a")
    assert g.worktree_add(repo, tmp_path / "a", "rig/a", create_from="main") is False
    assert (tmp_path / "a" / "README.md").is_file()
    assert len(g.worktree_list(repo)) == 3


def test_worktree_add_repairs_unregistered_directory(repo: Path, tmp_path: Path) -> None:
    path = tmp_path / "wt"
    g.worktree_add(repo, path, "rig/a", create_from="main")
    admin = g.common_dir(repo) / "worktrees" / path.name
    shutil.rmtree(admin)  # registration lost, directory left behind
    assert path.resolve() not in {w.path.resolve() for w in g.worktree_list(repo)}
    g.worktree_add(repo, path, "rig/a")
    assert path.resolve() in {w.path.resolve() for w in g.worktree_list(repo)}
    assert g.status_porcelain(path) == []
    assert (path / "src/auth/tokens.py").is_file()


def test_worktree_add_accepts_empty_dir_but_not_foreign_dir(repo: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    g.worktree_add(repo, empty, "rig/a", create_from="main")
    assert (empty / "README.md").is_file()
    foreign = tmp_path / "foreign"
    write(foreign / "precious.txt", "keep me\n")
    with pytest.raises(g.GitError, match="refusing to delete"):
        g.worktree_add(repo, foreign, "rig/b", create_from="main")
    assert (foreign / "precious.txt").read_text() == "keep me\n"


def test_worktree_add_repairs_registered_but_deleted(repo: Path, tmp_path: Path) -> None:
    path = tmp_path / "wt"
    g.worktree_add(repo, path, "rig/a", create_from="main")
    g.run(repo, "worktree", "lock", "--reason", "initializing", "--", str(path))
    shutil.rmtree(path)  # a locked registration is not pruned by `git worktree prune`
    g.worktree_add(repo, path, "rig/a")
    (entry,) = [w for w in g.worktree_list(repo) if w.path.resolve() == path.resolve()]
    assert entry.branch == "rig/a" and not entry.locked
    assert (path / "README.md").is_file()


def test_worktree_add_repairs_unfinished_checkout(repo: Path, tmp_path: Path) -> None:
    path = tmp_path / "wt"
    g.worktree_add(repo, path, "rig/a", create_from="main")
    admin = g.common_dir(repo) / "worktrees" / path.name
    (admin / "index").unlink()  # as if killed before checkout finished
    (path / "README.md").unlink()
    (admin / "locked").write_text("initializing")
    g.worktree_add(repo, path, "rig/a")
    assert (path / "README.md").is_file()
    assert g.status_porcelain(path) == []
    assert not [w for w in g.worktree_list(repo) if w.locked]


def test_sparse_worktree_of_directories_uses_cone_mode_and_a_sparse_index(
    repo: Path, tmp_path: Path
) -> None:
    path = tmp_path / "sparse"
    g.worktree_add(repo, path, "rig/auth", create_from="main", sparse_paths=["src/auth/**"])
    # cone mode: the directory, plus the files at the root (git always includes those)
    assert files_in(path) == {"README.md", "src/auth/tokens.py", "src/auth/deep/keys.py"}
    assert not g.is_dirty(path)
    # the index holds one entry for each directory outside the cone, not one per file
    assert "src/billing/" in g.run(path, "ls-files", "--sparse").splitlines()
    # the worktree works as usual: a commit in the cone, the files outside it kept
    write(path / "src/auth/tokens.py", "def make_token(user):\n    return f'v2:{user}'\n")
    commit_all(path, "v2")
    assert g.run(path, "show", "HEAD:src/billing/invoice.py") == "def total():\n    return 0"
    # the main worktree is unaffected
    assert {"README.md", "src/billing/invoice.py"} <= files_in(repo)
    assert g.run(repo, "config", "--default", "false", "--get", "core.sparseCheckout") == "false"
    # retrying is a no-op
    g.worktree_add(repo, path, "rig/auth", sparse_paths=["src/auth/**"])
    assert files_in(path) == {"README.md", "src/auth/tokens.py", "src/auth/deep/keys.py"}


@pytest.mark.parametrize(
    ("patterns", "dirs"),
    [
        (["src/auth/**"], ["src/auth"]),
        (["/docs/", "deploy/**"], ["docs", "deploy"]),
        (["src/*.py"], None),
        (["README.md"], None),
        (["src/auth/**", "*.md"], None),
        (["../x/**"], None),
        (["src/./a/**"], None),
    ],
)
def test_sparse_cone_dirs_only_for_whole_directories(patterns, dirs) -> None:
    assert g.sparse_cone_dirs(patterns) == dirs


def test_sparse_worktree_of_globs_contains_only_matching_files(repo: Path, tmp_path: Path) -> None:
    path = tmp_path / "globs"
    g.worktree_add(repo, path, "rig/py", create_from="main", sparse_paths=["src/**/*.py"])
    assert files_in(path) == {
        "src/auth/tokens.py",
        "src/auth/deep/keys.py",
        "src/billing/invoice.py",
    }
    assert not g.is_dirty(path)


def test_sparse_worktree_retry_after_crash_before_checkout(repo: Path, tmp_path: Path) -> None:
    path = tmp_path / "sparse"
    g.create_branch(repo, "rig/auth", "main")
    g.run(repo, "worktree", "add", "--no-checkout", "--", str(path), "rig/auth")
    g.worktree_add(repo, path, "rig/auth", sparse_paths=["src/auth/*.py", "README.md"])
    assert files_in(path) == {"src/auth/tokens.py", "README.md"}
    assert not g.is_dirty(path)


def test_concurrent_worktree_add_all_succeed(repo: Path, tmp_path: Path) -> None:
    def add(i: int) -> None:
        g.worktree_add(repo, tmp_path / "wts" / f"w{i}", f"rig/{i}", create_from="main")

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(add, range(16)))  # re-raises the first failure
    worktrees = g.worktree_list(repo)
    assert len(worktrees) == 17
    assert {w.branch for w in worktrees} == {"main", *(f"rig/{i}" for i in range(16))}
    assert all((tmp_path / "wts" / f"w{i}" / "README.md").is_file() for i in range(16))


def _hold_lock(repo: str, acquired, release) -> None:
    with g.repository_lock(repo):
        acquired.set()
        release.wait(30)


def test_repository_lock_excludes_other_processes(repo: Path) -> None:
    context = multiprocessing.get_context("spawn")
    acquired, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_lock, args=(str(repo), acquired, release))
    holder.start()
    try:
        assert acquired.wait(30), "child never took the lock"
        started = time.monotonic()
        with pytest.raises(g.GitLockTimeout), g.repository_lock(repo, timeout=0.3):
            pass
        assert time.monotonic() - started >= 0.3
    finally:
        release.set()
        holder.join(30)
    assert holder.exitcode == 0
    with g.repository_lock(repo, timeout=10) as lock_path:
        assert lock_path == g.common_dir(repo) / "gastown-worktrees.lock"
        with g.repository_lock(repo, timeout=0.1):  # re-entrant in one thread
            pass


def test_repository_lock_excludes_other_threads(repo: Path) -> None:
    inside = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with g.repository_lock(repo):
            inside.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert inside.wait(30)
        with pytest.raises(g.GitLockTimeout), g.repository_lock(repo, timeout=0.2):
            pass
    finally:
        release.set()
        thread.join(30)


def test_temporary_worktree_removed_after_exception(repo: Path, tmp_path: Path) -> None:
    parent = tmp_path / "gates"
    seen: list[Path] = []
    with pytest.raises(RuntimeError), g.temporary_worktree(repo, "HEAD~1", parent) as path:
        seen.append(path)
        assert path.name.startswith(g.TEMP_PREFIX)
        assert (path / "docs/index.md").read_text() == "docs\n"
        (entry,) = [w for w in g.worktree_list(repo) if w.path.resolve() == path]
        assert entry.detached
        raise RuntimeError("gate crashed")
    assert not seen[0].exists()
    assert len(g.worktree_list(repo)) == 1
    assert list(parent.iterdir()) == []


def test_cleanup_removes_dead_temporary_worktrees_only(repo: Path, tmp_path: Path) -> None:
    parent = tmp_path / "gates"
    dead = parent / f"{g.TEMP_PREFIX}dead"
    g.run(repo, "worktree", "add", "--detach", "--", str(dead), "HEAD")
    with g.temporary_worktree(repo, "HEAD", parent) as live:
        removed = g.cleanup_temporary_worktrees(repo, parent)
        assert removed == [dead.resolve()]
        assert live.is_dir()
        assert not dead.exists()
    assert len(g.worktree_list(repo)) == 1


# --- inspecting -------------------------------------------------------------------------


def test_status_and_is_dirty(repo: Path) -> None:
    assert g.status_porcelain(repo) == [] and not g.is_dirty(repo)
    write(repo / "new dir/untracked.txt", "x\n")
    assert g.status_porcelain(repo) == ["?? new dir/untracked.txt"]
    (repo / "new dir/untracked.txt").unlink()
    g.run(repo, "mv", "README.md", "READ.md")
    assert g.status_porcelain(repo) == ["R  READ.md"]
    assert g.is_dirty(repo)


def test_ahead_behind_merge_base_and_commits(repo: Path) -> None:
    base = g.rev_parse(repo, "HEAD~1")
    g.create_branch(repo, "rig/a", base)
    g.run(repo, "checkout", "-q", "rig/a")
    write(repo / "a.txt", "a\n")
    first = commit_all(repo, "first; $(echo sub)")
    write(repo / "b.txt", "b\n")
    second = commit_all(repo, "second")
    g.run(repo, "checkout", "-q", "main")
    assert g.ahead_behind(repo, "rig/a", "main") == (2, 1)
    assert g.ahead_behind(repo, "main", "main") == (0, 0)
    assert g.merge_base(repo, "rig/a", "main") == base
    commits = g.commits_between(repo, "main", "rig/a")
    assert [c.sha for c in commits] == [first, second]
    assert commits[0].subject == "first; $(echo sub)"
    assert commits[0].author == "Gas Town" and commits[0].email == "gastown@localhost"


def test_diff_numstat_with_rename_and_binary(repo: Path) -> None:
    base = g.rev_parse(repo, "HEAD")
    body = "".join(f"line {i}\n" for i in range(30))
    write(repo / "old name.txt", body)
    write(repo / "img.bin", bytes(range(256)) * 4)
    base = commit_all(repo, "add files")
    g.run(repo, "mv", "old name.txt", "new name.txt")
    write(repo / "new name.txt", body + "one more\n")
    write(repo / "img.bin", bytes(reversed(range(256))) * 4)
    (repo / "README.md").unlink()
    write(repo / "added.py", "x = 1\ny = 2\n")
    head = commit_all(repo, "rename and binary")

    changes = {c.path: c for c in g.diff_numstat(repo, base, head)}
    assert changes["new name.txt"] == g.FileChange("new name.txt", 1, 0, "R", "old name.txt")
    assert changes["img.bin"] == g.FileChange("img.bin", None, None, "M")
    assert changes["README.md"] == g.FileChange("README.md", 0, 1, "D")
    assert changes["added.py"] == g.FileChange("added.py", 2, 0, "A")
    assert set(g.changed_paths(repo, base, head)) == {
        "old name.txt",
        "new name.txt",
        "img.bin",
        "README.md",
        "added.py",
    }


def test_diff_symbols_and_excerpt(repo: Path) -> None:
    source = (
        "import os\n\n\nclass Tokens:\n    def issue(self, user):\n"
        + "".join(f"        step_{i} = {i}\n" for i in range(10))
        + "        return user\n\n\ndef helper():\n    return 1\n"
    )
    write(repo / "src/auth/service.py", source)
    write(repo / "db/schema.sql", "-- users table\nCREATE TABLE users (id int);\n")
    base = commit_all(repo, "service")
    changed = source.replace("        step_7 = 7\n", "        step_7 = 70\n")
    changed += "\n\nasync def refresh_token(user):\n    return user\n"
    write(repo / "src/auth/service.py", changed)
    write(repo / "db/schema.sql", "CREATE TABLE users (id int);\n")
    head = commit_all(repo, "change")

    symbols = g.diff_symbols(repo, base, head)
    assert "issue" in symbols["src/auth/service.py"]  # from the hunk header
    assert "refresh_token" in symbols["src/auth/service.py"]  # an added definition
    assert set(symbols) <= {"src/auth/service.py", "db/schema.sql"}
    assert g.diff_symbols(repo, base, head, ["db/schema.sql"]).keys() <= {"db/schema.sql"}

    excerpt = g.diff_excerpt(repo, base, head, ["src/auth/service.py"], max_lines=6)
    lines = excerpt.splitlines()
    assert lines[0] == "diff --git a/src/auth/service.py b/src/auth/service.py"
    assert len(lines) == 7 and lines[-1].endswith("more lines)")
    assert "step_7 = 70" in g.diff_excerpt(repo, base, head, ["src/auth/service.py"], 100)


# --- merging ----------------------------------------------------------------------------


def _diverge(repo: Path, readme_on_main: str | None) -> None:
    g.create_branch(repo, "rig/a", "main")
    g.run(repo, "checkout", "-q", "rig/a")
    write(repo / "README.md", "# app from rig\n")
    write(repo / "feature.py", "x = 1\n")
    commit_all(repo, "rig work")
    g.run(repo, "checkout", "-q", "main")
    write(repo / "src/billing/invoice.py", "def total():\n    return 1\n")
    if readme_on_main is not None:
        write(repo / "README.md", readme_on_main)
    commit_all(repo, "main work")


def test_merge_tree_clean(repo: Path) -> None:
    _diverge(repo, readme_on_main=None)
    main_before = g.resolve_branch(repo, "main")
    result = g.merge_tree(repo, "main", "rig/a")
    assert result.clean and result.conflicts == []
    listing = g.run(repo, "ls-tree", "-r", "--name-only", result.tree).splitlines()
    assert {"feature.py", "README.md", "src/billing/invoice.py"} <= set(listing)
    assert g.run(repo, "show", f"{result.tree}:README.md") == "# app from rig"
    assert g.resolve_branch(repo, "main") == main_before
    assert g.status_porcelain(repo) == []

    merged = g.commit_tree(repo, result.tree, ["main", "rig/a"], "Land rig/a")
    g.update_ref(repo, "refs/heads/main", merged, main_before)
    assert g.ahead_behind(repo, "rig/a", "main") == (0, 2)


def test_merge_tree_conflict(repo: Path) -> None:
    _diverge(repo, readme_on_main="# app from main\n")
    main_before = g.resolve_branch(repo, "main")
    result = g.merge_tree(repo, "main", "rig/a")
    assert not result.clean
    assert result.conflicts == ["README.md"]
    assert g.resolve_branch(repo, "main") == main_before
    assert g.status_porcelain(repo) == []
    assert (repo / "README.md").read_text() == "# app from main\n"
    with pytest.raises(g.GitError, match="unknown revision"):
        g.merge_tree(repo, "main", "no-such-branch")


# --- snapshots --------------------------------------------------------------------------


def test_snapshot_worktree_captures_everything_and_touches_nothing(
    repo: Path, tmp_path: Path
) -> None:
    path = tmp_path / "wt"
    g.worktree_add(repo, path, "rig/a", create_from="main")
    assert g.snapshot_worktree(path) is None  # clean

    write(path / "README.md", "modified, not staged\n")
    write(path / "src/auth/tokens.py", "staged change\n")
    g.run(path, "add", "src/auth/tokens.py")
    write(path / "notes/untracked.md", "untracked\n")
    (path / "docs/index.md").unlink()

    index = Path(g.run(path, "rev-parse", "--path-format=absolute", "--git-path", "index"))
    index_before = index.read_bytes()
    index_mtime = index.stat().st_mtime_ns
    status_before = g.status_porcelain(path)
    head_before = g.rev_parse(path, "HEAD")
    files_before = {p: (path / p).read_bytes() for p in files_in(path)}

    sha = g.snapshot_worktree(path)
    assert sha is not None
    assert g.run(path, "rev-parse", f"{sha}^") == head_before
    assert g.run(path, "show", f"{sha}:README.md") == "modified, not staged"
    assert g.run(path, "show", f"{sha}:src/auth/tokens.py") == "staged change"
    assert g.run(path, "show", f"{sha}:notes/untracked.md") == "untracked"
    names = g.run(path, "ls-tree", "-r", "--name-only", sha).splitlines()
    assert "docs/index.md" not in names

    assert index.read_bytes() == index_before
    assert index.stat().st_mtime_ns == index_mtime
    assert g.status_porcelain(path) == status_before
    assert g.rev_parse(path, "HEAD") == head_before
    assert {p: (path / p).read_bytes() for p in files_in(path)} == files_before

    g.update_ref(repo, "refs/gastown/archive/rig-a/1", sha, g.ZERO_OID)
    assert g.run(repo, "rev-parse", "refs/gastown/archive/rig-a/1") == sha


def test_snapshot_of_sparse_worktree_keeps_files_outside_the_sparse_set(
    repo: Path, tmp_path: Path
) -> None:
    path = tmp_path / "sparse"
    g.worktree_add(repo, path, "rig/s", create_from="main", sparse_paths=["src/auth/**"])
    write(path / "src/auth/tokens.py", "changed\n")
    write(path / "src/billing/new.py", "made outside the sparse patterns\n")
    sha = g.snapshot_worktree(path)
    assert sha is not None
    names = set(g.run(path, "ls-tree", "-r", "--name-only", sha).splitlines())
    assert {"README.md", "src/billing/invoice.py", "docs/index.md"} <= names  # not "deleted"
    assert g.run(path, "show", f"{sha}:src/auth/tokens.py") == "changed"
    assert g.run(path, "show", f"{sha}:src/billing/new.py") == "made outside the sparse patterns"


def test_run_refuses_inherited_git_dir(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_DIR", str(repo / ".git"))  # as inside a git hook
    with pytest.raises(g.GitError, match="GIT_DIR"):
        g.run(repo, "status")


TRICKY_NAMES = [
    "a/.b",
    ".a",
    "a.lock",
    "a.lock/b",
    "a//b",
    "/a",
    "a/",
    "a.",
    "HEAD",
    "-x",
    "a..b",
    "a@{b",
    "@",
    "",
    "a b",
    "a\tb",
    "a~1",
    "a^",
    "a:b",
    "a?",
    "a*",
    "a[b",
    "a\\b",
    "a\x7f",
    "ok/name",
    "feature/x-1",
    "v1.2",
    "a/b.c",
    "a,b",
    "a+b",
    "a=b",
    "@a",
    "a@b",
    "rig/api",
    "x" * 201,
]


@pytest.mark.parametrize("name", TRICKY_NAMES)
def test_python_rules_are_at_least_as_strict_as_git(name):
    """validate_ref_name runs no git process; it must refuse everything git refuses."""
    if not g.git_accepts_ref(name, "--branch"):
        with pytest.raises(g.InvalidRefName):
            g.validate_ref_name(name)


def test_patch_symbols_leaves_out_the_definition_before_an_appended_one():
    """git's hunk header names the definition before an appended function: it did not change."""
    patch = (
        "diff --git a/a.py b/a.py\n--- a/a.py\n+++ b/a.py\n"
        "@@ -10,0 +11,4 @@ def chunks(x):\n+\n+\n+def load_user(u):\n+    return u\n"
        "@@ -3 +3 @@ def slugify(s):\n-    return s\n+    return s.lower()\n"
    )
    assert g.patch_symbols(patch) == {"a.py": ["load_user", "slugify"]}
