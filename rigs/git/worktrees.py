"""Worktrees: add (safe to retry after a crash at any point, sparse when asked), remove,
throwaway detached worktrees for gates, their cleanup, status, and the rebase of an idle rig's
checkout. Changes to a repository's worktree list hold :func:`repository_lock`."""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from common.faults import fault_point
from rigs.git.refs import _commit, create_branch, resolve_branch, validate_ref_name
from rigs.git.run import (
    GitError,
    StrPath,
    _execute,
    _failure,
    _try_flock,
    common_dir,
    repository_lock,
    run,
)

logger = logging.getLogger("rigs.git")

TEMP_PREFIX = "gastown-tmp-"


@dataclass(frozen=True)
class Worktree:
    path: Path
    head: str | None
    branch: str | None  # short name; None when detached or bare
    detached: bool = False
    bare: bool = False
    locked: bool = False
    lock_reason: str = ""
    prunable: bool = False


def worktree_list(repo: StrPath) -> list[Worktree]:
    out = run(repo, "worktree", "list", "--porcelain", "-z")
    result, fields = [], {}
    for token in [*out.split("\0"), ""]:
        if token:
            key, _, value = token.partition(" ")
            fields[key] = value
        elif "worktree" in fields:
            branch = fields.get("branch", "").removeprefix("refs/heads/") or None
            flags = {k: k in fields for k in ("detached", "bare", "locked", "prunable")}
            path, head, reason = Path(fields["worktree"]), fields.get("HEAD"), fields.get("locked")
            result.append(Worktree(path, head, branch, **flags, lock_reason=reason or ""))
            fields = {}
    return result


def worktree_prune(repo: StrPath) -> None:
    with repository_lock(repo):
        run(repo, "worktree", "prune")


def _find_worktree(repo: StrPath, target: Path) -> Worktree | None:
    return next((w for w in worktree_list(repo) if w.path.resolve() == target), None)


def _admin_dir(worktree: Path) -> Path | None:
    """Where a worktree's ``.git`` file points. Read directly: git run inside a broken
    worktree would silently discover an enclosing repository instead."""
    try:
        text = (worktree / ".git").read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return (worktree / text[8:]).resolve() if text.startswith("gitdir: ") else None


def _worktree_ready(path: Path) -> bool:
    """git writes a worktree's index only after checking files out: no index, unfinished."""
    admin = _admin_dir(path)
    return admin is not None and (admin / "index").is_file()


def _clear_leftover_dir(repo: StrPath, target: Path) -> None:
    """Remove a dead worktree's directory (or an empty one); refuse anything else."""
    if not target.exists():
        return
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()
        return
    admin = _admin_dir(target)
    if admin is None or admin.parent != common_dir(repo) / "worktrees":
        raise GitError(f"refusing to delete {target}: not a worktree of {repo}")
    shutil.rmtree(target)


def worktree_add(
    repo: StrPath,
    path: StrPath,
    branch: str,
    *,
    create_from: str | None = None,
    sparse_paths: list[str] | None = None,
    timeout: float = 600.0,
) -> bool:
    """Check ``branch`` out at ``path``; safe to retry after a crash at any point. Returns
    True if it created the branch (at ``create_from``), False if the branch was there.

    A finished worktree of the branch is left alone; a half-created one (directory not
    registered, registered without directory, checkout unfinished) is made again.
    ``create_from`` is used only if the branch is missing. ``sparse_paths``: non-cone
    patterns (``src/auth/**``); only matching files are checked out. ``timeout`` bounds
    both the wait for the lock and each git command.
    """
    validate_ref_name(branch)
    if sparse_paths is not None and (
        not sparse_paths or any(not p.strip() or set(p) & set("\r\n\0") for p in sparse_paths)
    ):
        raise GitError(f"invalid sparse patterns {sparse_paths!r}")
    target = Path(path).resolve()
    no_checkout = ["--no-checkout"] if sparse_paths is not None else []
    with repository_lock(repo, timeout=timeout):
        if create_from is not None and not target.exists():
            # A new rig, the common case: one `worktree add -b`, which refuses a branch that
            # exists and a path still registered. Those (a retry after a crash) take the
            # careful path below, which prunes, inspects and repairs first.
            start = _commit(repo, create_from)
            add = ["worktree", "add", *no_checkout, "-b", branch, "--", str(target), start]
            if _execute(repo, add, timeout)[0] == 0:
                fault_point("worktree.add")
                if sparse_paths is not None:
                    _sparse_checkout(target, sparse_paths, timeout)
                return True
        run(repo, "worktree", "prune")
        created = resolve_branch(repo, branch) is None
        if created:
            if create_from is None:
                raise GitError(f"branch {branch!r} does not exist and no create_from given")
            create_branch(repo, branch, create_from)
        if (existing := _find_worktree(repo, target)) is not None:
            ready = _worktree_ready(target)
            if ready and existing.branch == branch:
                if existing.lock_reason == "initializing":  # killed just before unlocking
                    run(repo, "worktree", "unlock", "--", str(target))
                return created
            if ready or target == Path(repo).resolve():
                raise GitError(f"{target} is already a worktree for {existing.branch!r}")
            _clear_leftover_dir(repo, target)
            # --force twice: also drops locked entries (a killed add leaves one locked).
            run(repo, "worktree", "remove", "--force", "--force", "--", str(target))
        _clear_leftover_dir(repo, target)
        target.parent.mkdir(parents=True, exist_ok=True)
        run(repo, "worktree", "add", *no_checkout, "--", str(target), branch, timeout=timeout)
        if sparse_paths is not None:
            _sparse_checkout(target, sparse_paths, timeout)
    return created


_CONE_DIR = re.compile(r"^/?([A-Za-z0-9._@+-]+(?:/[A-Za-z0-9._@+-]+)*)/(?:\*\*)?$")


def sparse_cone_dirs(patterns: list[str]) -> list[str] | None:
    """The directories of patterns that are all whole directories (`src/api/**`, `docs/`),
    else None. Those can use git's cone mode."""
    dirs = []
    for pattern in patterns:
        match = _CONE_DIR.match(pattern)
        if match is None or any(part in (".", "..") for part in match[1].split("/")):
            return None
        dirs.append(match[1])
    return dirs


def _sparse_checkout(target: Path, patterns: list[str], timeout: float) -> None:
    """Check out only ``patterns`` in a worktree added with --no-checkout.

    Whole directories use cone mode with a sparse index: the index then holds one entry per
    directory outside the cone instead of one per file, which is what makes a sparse rig of a
    large repository fast (git also checks out the files at the repository root in this
    mode). Other globs use the slower non-cone mode, which matches any pattern."""
    dirs = sparse_cone_dirs(patterns)
    if dirs is not None:
        listed = "".join(d + "\n" for d in dirs)
        run(target, "sparse-checkout", "set", "--cone", "--sparse-index", "--stdin", stdin=listed)
        run(target, "checkout", "--quiet", timeout=timeout)
        return
    listed = "".join(p + "\n" for p in patterns)
    run(target, "sparse-checkout", "set", "--no-cone", "--stdin", stdin=listed)
    run(target, "read-tree", "-mu", "HEAD", timeout=timeout)


def worktree_remove(repo: StrPath, path: StrPath, force: bool = False) -> None:
    """Remove the worktree at ``path`` (no-op if absent). Without ``force`` git refuses
    when it holds uncommitted or untracked files."""
    target = Path(path).resolve()
    with repository_lock(repo):
        if _find_worktree(repo, target) is None:
            run(repo, "worktree", "prune")
            return
        if target == Path(repo).resolve():
            raise GitError(f"refusing to remove the main worktree {target}")
        flags = ["--force", "--force"] if force or not target.exists() else []
        run(repo, "worktree", "remove", *flags, "--", str(target))


@contextmanager
def temporary_worktree(repo: StrPath, commit: str, parent_dir: StrPath) -> Iterator[Path]:
    """A detached throwaway worktree of ``commit`` (for gates), always removed on exit. Its
    flocked ``<name>.lock`` tells :func:`cleanup_temporary_worktrees` that it is in use."""
    sha = _commit(repo, commit)
    parent = Path(parent_dir).resolve()
    parent.mkdir(parents=True, exist_ok=True)
    path = parent / f"{TEMP_PREFIX}{uuid.uuid4().hex[:12]}"
    alive = path.with_name(path.name + ".lock")
    fd = os.open(alive, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with repository_lock(repo):
            run(repo, "worktree", "add", "--detach", "--", str(path), sha, timeout=600)
        yield path
    finally:
        try:
            _remove_temporary(repo, path)
        except (GitError, OSError):
            logger.exception("could not remove temporary worktree %s", path)
        alive.unlink(missing_ok=True)
        os.close(fd)


def _remove_temporary(repo: StrPath, path: Path) -> None:
    with repository_lock(repo):
        if _find_worktree(repo, path) is not None:
            run(repo, "worktree", "remove", "--force", "--force", "--", str(path))
        shutil.rmtree(path, ignore_errors=True)
        run(repo, "worktree", "prune")


def cleanup_temporary_worktrees(repo: StrPath, parent_dir: StrPath | None = None) -> list[Path]:
    """Remove temporary worktrees left by crashed processes (registered ones, and with
    ``parent_dir`` also stray directories); skip those whose owner is alive."""
    parent = Path(parent_dir).resolve() if parent_dir is not None else None
    found = {w.path.resolve() for w in worktree_list(repo)}
    if parent is not None and parent.is_dir():
        found |= {p for p in parent.iterdir() if p.is_dir()}
    removed = []
    for path in sorted(found):
        if not path.name.startswith(TEMP_PREFIX) or (parent and path.parent != parent):
            continue
        alive = path.with_name(path.name + ".lock")
        fd = os.open(alive, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            if _try_flock(fd):  # else its owner is still running
                _remove_temporary(repo, path)
                alive.unlink(missing_ok=True)
                removed.append(path)
        finally:
            os.close(fd)
    return removed


def status_porcelain(worktree: StrPath) -> list[str]:
    """``XY path`` entries for tracked changes and untracked (not ignored) files."""
    out = run(worktree, "status", "--porcelain=v1", "-z", "--untracked-files=all")
    entries, tokens = [], iter(out.split("\0"))
    for token in tokens:
        if token:
            entries.append(token)
            if token[0] in "RC":
                next(tokens, None)  # the rename/copy source is a token of its own
    return entries


def is_dirty(worktree: StrPath) -> bool:
    return bool(status_porcelain(worktree))


DIRTY_READ_TIMEOUT = 3.0


def worktree_dirty(worktree: StrPath, *, timeout: float = DIRTY_READ_TIMEOUT) -> bool | None:
    """Whether the worktree has uncommitted changes (untracked files included), read now and
    bounded (``timeout`` seconds): what a request may afford. None when it cannot be read (no
    such directory, not a worktree, too slow). Read-only: our environment keeps git from
    taking the index lock (``GIT_OPTIONAL_LOCKS=0``)."""
    if not Path(worktree).is_dir():
        return None
    try:
        status, out, _ = _execute(
            worktree, ["status", "--porcelain=v1", "-z", "--untracked-files=normal"], timeout
        )
    except GitError:
        return None
    return bool(out) if status == 0 else None


def rebase_worktree(worktree: StrPath, onto: str) -> bool:
    """Rebase the worktree's checked-out branch onto ``onto`` (an idle, clean rig being kept
    current for its agent). Fast-forwards when it has no commits of its own. On a conflict the
    rebase is aborted, the worktree is left as it was, and False is returned."""
    target = _commit(worktree, onto)
    status, out, err = _execute(worktree, ["rebase", "--no-autostash", target], timeout=600)
    if status == 0:
        return True
    _execute(worktree, ["rebase", "--abort"])
    if "CONFLICT" in out or "CONFLICT" in err or "could not apply" in err:
        return False
    raise _failure(["rebase", target], status, err, out)
