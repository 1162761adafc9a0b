"""Objects written without touching a worktree, index or ref: the in-memory merge
(``merge-tree --write-tree``), commits (``commit-tree``, from text, from a worktree's state) and
the replay of commits onto a new base for the ``rebase`` merge strategy."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rigs.git.refs import _commit, rev_parse
from rigs.git.run import (
    _OID,
    IDENTITY_EMAIL,
    IDENTITY_NAME,
    GitError,
    StrPath,
    _execute,
    _failure,
    _ok,
    run,
)
from rigs.git.worktrees import temporary_worktree


@dataclass(frozen=True)
class MergeTreeResult:
    tree: str
    clean: bool
    conflicts: list[str]


def merge_tree(repo: StrPath, ours: str, theirs: str) -> MergeTreeResult:
    """Merge in memory: no checkout, index or ref is touched (only objects are written).
    git 2.39 exits 1 for conflicts but also for unknown revisions, hence resolving first."""
    o, t = _commit(repo, ours), _commit(repo, theirs)
    args = ["merge-tree", "--write-tree", "--name-only", "--no-messages", "-z", o, t]
    status, out, err = _execute(repo, args)
    tokens = out.split("\0")
    if status not in (0, 1) or not _OID.fullmatch(tokens[0]):
        raise _failure(args, status, err, out)
    conflicts = list(dict.fromkeys(p for p in tokens[1:] if p))
    return MergeTreeResult(tree=tokens[0], clean=status == 0, conflicts=conflicts)


def commit_tree(
    repo: StrPath,
    tree: str,
    parents: list[str],
    message: str,
    author_name: str | None = None,
    author_email: str | None = None,
) -> str:
    """Create a commit object (no ref moves). The message goes verbatim via stdin; the
    committer is always Gas Town, the author defaults to it."""
    tree_sha = (
        tree
        if _OID.fullmatch(tree)
        else _ok(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{tree}^{{tree}}")
    )
    if tree_sha is None:
        raise GitError(f"unknown tree {tree!r}")
    args = ["commit-tree", "--no-gpg-sign", tree_sha]
    for parent in parents:
        args += ["-p", _commit(repo, parent)]
    env = {
        "GIT_AUTHOR_NAME": author_name or IDENTITY_NAME,
        "GIT_AUTHOR_EMAIL": author_email or IDENTITY_EMAIL,
    }
    return run(repo, *args, env=env, stdin=message if message.endswith("\n") else message + "\n")


def commit_files(
    repo: StrPath, files: dict[str, str], message: str, *, parent: str | None = None
) -> str:
    """A commit of ``parent``'s tree (or of nothing) with ``files`` (path → text) written into
    it. Only objects are written (a scratch index, no worktree, no ref moves), so it works in a
    bare repository; move a branch to it with :func:`update_ref`."""
    for path in files:
        parts = path.split("/")
        if path.startswith('"') or set(path) & set("\0\n\r\t\\") or "" in parts:
            raise GitError(f"invalid file path {path!r}")
        if any(part in (".", "..", ".git") for part in parts):
            raise GitError(f"invalid file path {path!r}")
    with tempfile.TemporaryDirectory(prefix="gastown-index-") as scratch:
        env = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
        if parent is not None:
            run(repo, "read-tree", _commit(repo, parent), env=env)
        entries = "".join(
            f"100644 {run(repo, 'hash-object', '-w', '--stdin', stdin=text)}\t{path}\n"
            for path, text in files.items()
        )
        run(repo, "update-index", "--add", "--index-info", stdin=entries, env=env)
        tree = run(repo, "write-tree", env=env)
    return commit_tree(repo, tree, [parent] if parent is not None else [], message)


def snapshot_worktree(worktree: StrPath, message: str = "Gas Town snapshot") -> str | None:
    """Commit all of a worktree's work (untracked, not ignored files too) on HEAD without
    touching its files, index or refs; None if nothing differs from HEAD.

    Uses a copy of the real index as ``GIT_INDEX_FILE``: that keeps git's stat cache (no
    re-hashing every file) and sparse-checkout skip flags (files outside the sparse set
    are not recorded as deleted). ``copy2`` keeps the mtime git's racy-clean check uses.
    """
    head = rev_parse(worktree, "HEAD")
    index = Path(run(worktree, "rev-parse", "--path-format=absolute", "--git-path", "index"))
    with tempfile.TemporaryDirectory(prefix="gastown-snapshot-") as scratch:
        env = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
        if index.is_file():
            shutil.copy2(index, env["GIT_INDEX_FILE"])
        elif head is not None:
            run(worktree, "read-tree", head, env=env)
        # --sparse: also take work found outside a sparse checkout's patterns
        run(worktree, "add", "--all", "--sparse", env=env, timeout=600)
        tree = run(worktree, "write-tree", env=env)
    if head is not None:
        base_tree = run(worktree, "rev-parse", f"{head}^{{tree}}")
    else:
        base_tree = run(worktree, "hash-object", "-t", "tree", "--stdin", stdin=b"")
    if tree == base_tree:
        return None
    return commit_tree(worktree, tree, [head] if head else [], message)


@dataclass(frozen=True)
class ReplayResult:
    tip: str | None
    conflicts: list[str]


def replay_commits(
    repo: StrPath, onto: str, commits: list[str], parent_dir: StrPath
) -> ReplayResult:
    """Cherry-pick ``commits`` onto ``onto`` in a throwaway worktree (linear history for the
    `rebase` merge strategy). git 2.39 cannot replay without a checkout (`merge-tree
    --merge-base` came in 2.40), so the temporary worktree stands in; no real worktree is
    touched. On a conflict the pick is aborted and the conflicting paths are returned."""
    if not commits:
        return ReplayResult(_commit(repo, onto), [])
    with temporary_worktree(repo, onto, parent_dir) as scratch:
        for sha in commits:
            status, out, err = _execute(
                scratch,
                ["cherry-pick", "--allow-empty", "--keep-redundant-commits", sha],
                timeout=600,
            )
            if status != 0:
                unmerged = run(scratch, "diff", "--name-only", "--diff-filter=U", "-z")
                _execute(scratch, ["cherry-pick", "--abort"])
                conflicts = [p for p in unmerged.split("\0") if p]
                if not conflicts:
                    raise _failure(["cherry-pick", sha], status, err, out)
                return ReplayResult(None, conflicts)
        return ReplayResult(run(scratch, "rev-parse", "HEAD"), [])
