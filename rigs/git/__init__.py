"""The only place in Gas Town that runs git. Use it as ``from rigs import git``, then
``git.resolve_branch(...)``, ``git.merge_tree(...)``, ``git.run(repo, "status")``.

- ``run.py``: the one entry that starts git (timeout, ``GIT_TERMINAL_PROMPT=0``, no shell, a
  fixed identity), the error types and the per-repository lock;
- ``refs.py``: names, revisions, refs (compare-and-swap), counts between commits;
- ``worktrees.py``: worktrees (add, remove, throwaway ones for gates), status, rebase;
- ``diff.py``: line counts, changed paths, excerpts, touched symbols, hunks;
- ``symbols.py``: the language-specific patterns behind the symbols (no git);
- ``merge.py``: in-memory merges, commits written without a checkout, replays.

Note: ``git.run`` is the function (as before the split); the module is ``rigs.git.run``
when imported by its full name (``from rigs.git.run import ...``).
"""

from rigs.git.diff import (
    FileChange,
    FileHunks,
    Hunk,
    changed_paths,
    diff_excerpt,
    diff_hunks,
    diff_numstat,
    diff_symbols,
)
from rigs.git.merge import (
    MergeTreeResult,
    ReplayResult,
    commit_files,
    commit_tree,
    merge_tree,
    replay_commits,
    snapshot_worktree,
)
from rigs.git.refs import (
    Commit,
    ahead_behind,
    branch_exists,
    branch_tips,
    commits_between,
    create_branch,
    delete_branch,
    git_accepts_ref,
    init_repository,
    is_ancestor,
    is_bare,
    is_repository,
    merge_base,
    resolve_branch,
    rev_count,
    rev_list,
    rev_parse,
    tree_of,
    update_ref,
    validate_ref_name,
)
from rigs.git.symbols import patch_symbols
from rigs.git.worktrees import (
    TEMP_PREFIX,
    Worktree,
    cleanup_temporary_worktrees,
    is_dirty,
    rebase_worktree,
    sparse_cone_dirs,
    status_porcelain,
    temporary_worktree,
    worktree_add,
    worktree_dirty,
    worktree_list,
    worktree_prune,
    worktree_remove,
)

# Last, so that the name `run` is the function, not the submodule that importing it binds here.
from rigs.git.run import (  # isort: skip
    DEFAULT_TIMEOUT,
    IDENTITY_EMAIL,
    IDENTITY_NAME,
    LOCK_FILE_NAME,
    LOCK_TIMEOUT,
    ZERO_OID,
    GitError,
    GitLockTimeout,
    GitTimeout,
    InvalidRefName,
    RefMoved,
    StrPath,
    common_dir,
    repository_lock,
    run,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "IDENTITY_EMAIL",
    "IDENTITY_NAME",
    "LOCK_FILE_NAME",
    "LOCK_TIMEOUT",
    "TEMP_PREFIX",
    "ZERO_OID",
    "Commit",
    "FileChange",
    "FileHunks",
    "GitError",
    "GitLockTimeout",
    "GitTimeout",
    "Hunk",
    "InvalidRefName",
    "MergeTreeResult",
    "RefMoved",
    "ReplayResult",
    "StrPath",
    "Worktree",
    "ahead_behind",
    "branch_exists",
    "branch_tips",
    "changed_paths",
    "cleanup_temporary_worktrees",
    "commit_files",
    "commit_tree",
    "commits_between",
    "common_dir",
    "create_branch",
    "delete_branch",
    "diff_excerpt",
    "diff_hunks",
    "diff_numstat",
    "diff_symbols",
    "git_accepts_ref",
    "init_repository",
    "is_ancestor",
    "is_bare",
    "is_dirty",
    "is_repository",
    "merge_base",
    "merge_tree",
    "patch_symbols",
    "rebase_worktree",
    "replay_commits",
    "repository_lock",
    "resolve_branch",
    "rev_count",
    "rev_list",
    "rev_parse",
    "run",
    "snapshot_worktree",
    "sparse_cone_dirs",
    "status_porcelain",
    "temporary_worktree",
    "tree_of",
    "update_ref",
    "validate_ref_name",
    "worktree_add",
    "worktree_dirty",
    "worktree_list",
    "worktree_prune",
    "worktree_remove",
]
