"""The only place in Gas Town that runs git: through :func:`run` (GitPython, a timeout, no
shell, no prompts, a fixed identity), with user-given revisions resolved behind
``--end-of-options``, names validated, paths after ``--``, and worktree-list changes
serialized by :func:`repository_lock` (concurrent ``git worktree add`` fails intermittently).
"""

from __future__ import annotations

import codecs
import fcntl
import functools
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from git.cmd import Git
from git.exc import GitCommandNotFound

logger = logging.getLogger(__name__)

StrPath = str | Path
Stdin = str | bytes | IO[bytes] | None
DEFAULT_TIMEOUT = 60.0
LOCK_TIMEOUT = 120.0
LOCK_FILE_NAME = "gastown-worktrees.lock"
TEMP_PREFIX = "gastown-tmp-"
ZERO_OID = "0" * 40
IDENTITY_NAME, IDENTITY_EMAIL = "Gas Town", "gastown@localhost"

_BASE_ENV = {
    "GIT_TERMINAL_PROMPT": "0",  # never hang waiting for credentials
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_OPTIONAL_LOCKS": "0",  # our `status` calls must not take an agent's index lock
    "GIT_AUTHOR_NAME": IDENTITY_NAME,
    "GIT_AUTHOR_EMAIL": IDENTITY_EMAIL,
    "GIT_COMMITTER_NAME": IDENTITY_NAME,
    "GIT_COMMITTER_EMAIL": IDENTITY_EMAIL,
}
# Inherited from a git hook, these would silently redirect every command we run.
_REDIRECTING_ENV = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR")
_OID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


class GitError(Exception):
    """A git command failed; keeps command and output so callers can show why."""

    def __init__(
        self,
        message: str,
        args_: Sequence[str] = (),
        status: int | None = None,
        stderr: str = "",
        stdout: str = "",
    ) -> None:
        super().__init__(message)
        self.args_, self.status, self.stderr, self.stdout = list(args_), status, stderr, stdout

    def tail(self, n: int = 20) -> str:
        """The last ``n`` lines of git's output (what a failed provision records)."""
        lines = "\n".join(s for s in (self.stdout, self.stderr) if s).splitlines()
        return "\n".join(lines[-n:]) if lines else str(self)


class GitTimeout(GitError):
    """git was killed because it outran its timeout."""


class GitLockTimeout(GitError):
    """The per-repository lock could not be taken in time."""


class RefMoved(GitError):
    """A compare-and-swap ref update was refused: the ref is not where we expected."""


class InvalidRefName(GitError, ValueError):
    """A user-provided branch or ref name is unsafe or invalid."""


@contextmanager
def _stdin_file(stdin: Stdin) -> Iterator[IO[bytes] | None]:
    """GitPython wants a file for stdin, so text is spooled to an anonymous temp file."""
    if not isinstance(stdin, str | bytes):
        yield stdin
        return
    with tempfile.TemporaryFile() as spool:
        spool.write(stdin.encode() if isinstance(stdin, str) else stdin)
        spool.seek(0)
        yield spool


def _execute(
    cwd: StrPath,
    args: Sequence[str],
    timeout: float = DEFAULT_TIMEOUT,
    env: dict[str, str] | None = None,
    stdin: Stdin = None,
) -> tuple[int, str, str]:
    """Run git; return (status, stdout, stderr). Raises only on timeout or bad setup."""
    args = [str(a) for a in args]
    # GitPython silently falls back to the process cwd for a missing directory,
    # which would run the command against whatever repository that is.
    if not Path(cwd).is_dir():
        raise GitError(f"not a directory: {cwd}", args)
    if leaked := [name for name in _REDIRECTING_ENV if name in os.environ]:
        raise GitError(f"refusing to run git with {', '.join(leaked)} set in our environment")
    logger.debug("git %s (in %s)", " ".join(args), cwd)
    with _stdin_file(stdin) as istream:
        try:
            status, out, err = Git(str(cwd)).execute(
                [Git.GIT_PYTHON_GIT_EXECUTABLE or "git", *args],
                istream=istream,
                with_extended_output=True,
                with_exceptions=False,
                kill_after_timeout=timeout,
                env={**_BASE_ENV, **(env or {})},
            )
        except GitCommandNotFound as exc:
            raise GitError(f"git executable not found: {exc}", args) from exc
    if status == -signal.SIGKILL and err.startswith("Timeout:"):
        command = " ".join(args)[:200]
        raise GitTimeout(f"git {command} timed out after {timeout}s", args, status, err, out)
    return status, out, err


def _failure(args: Sequence[str], status: int, err: str, out: str) -> GitError:
    """An error whose message shows git's most telling line (its last error, not hints)."""
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("hint:")]
    errors = [line for line in lines if line.startswith(("fatal:", "error:"))]
    last = (errors or lines or ["no output"])[-1]
    command = " ".join(args)[:200]
    return GitError(f"git {command} failed (exit {status}): {last}", args, status, err, out)


def run(
    cwd: StrPath,
    *args: str,
    timeout: float = DEFAULT_TIMEOUT,
    env: dict[str, str] | None = None,
    stdin: Stdin = None,
) -> str:
    """Run ``git <args>`` in ``cwd``; return stdout without its trailing newline."""
    status, out, err = _execute(cwd, args, timeout, env, stdin)
    if status != 0:
        raise _failure(args, status, err, out)
    return out


def _ok(cwd: StrPath, *args: str) -> str | None:
    """Run a probe: stdout on success, None on a non-zero exit."""
    status, out, _ = _execute(cwd, args)
    return out if status == 0 else None


_REF_RULES = [
    (r"^-", "must not start with '-'"),
    (r"\.\.", "must not contain '..'"),
    (r"\s", "must not contain whitespace"),
    (r"[\x00-\x1f\x7f]", "must not contain control characters"),
    (r"[~^:?*\[\\]", "must not contain any of ~ ^ : ? * [ \\"),
    (r"@\{", "must not contain '@{'"),
    (r"(\.lock|/|\.)$", "must not end with '.lock', '/' or '.'"),
    # The rest of git's check-ref-format rules, so that no git process is needed to check.
    (r"(^|/)\.", "no part may start with '.'"),
    (r"\.lock/", "no part may end with '.lock'"),
    (r"^/|//", "must not start with '/' or contain '//'"),
    (r"^HEAD$", "must not be 'HEAD'"),
    (r"^@?$", "must not be empty or '@'"),
    (r"^.{201}", "must be at most 200 characters"),
    # Stricter than git: no shell, quoting or URL metacharacters at all.
    (r"[^A-Za-z0-9._/+=,@-]", "may only contain ASCII letters, digits and . _ - / + = , @"),
]


def _check_ref(name: str, kind: str) -> str:
    for pattern, rule in _REF_RULES:
        if re.search(pattern, name):
            raise InvalidRefName(f"invalid {kind} {name!r}: {rule}")
    return name


def git_accepts_ref(name: str, *check_args: str) -> bool:
    """git's own verdict (tests check that the rules above are at least as strict)."""
    return _ok(tempfile.gettempdir(), "check-ref-format", *check_args, name) is not None


def validate_ref_name(name: str) -> str:
    """Refuse unsafe branch names before they reach git, a URL or a log line."""
    return _check_ref(name, "branch name")


_held = threading.local()  # lock files this thread holds, for re-entrancy


@contextmanager
def repository_lock(repo_path: StrPath, timeout: float = LOCK_TIMEOUT) -> Iterator[Path]:
    """Serialize worktree-list changes of one repository across threads and processes.

    ``flock`` on ``<common-dir>/gastown-worktrees.lock``: each call opens its own descriptor,
    so threads exclude each other too, and the kernel releases it if the process dies.
    Re-entrant within a thread. Raises GitLockTimeout.
    """
    path = _common_dir_cached(str(Path(repo_path).resolve())) / LOCK_FILE_NAME
    held: set[Path] = _held.__dict__.setdefault("paths", set())
    if path in held:
        yield path
        return
    deadline = time.monotonic() + timeout
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        while not _try_flock(fd):
            if time.monotonic() >= deadline:
                raise GitLockTimeout(f"timed out after {timeout}s waiting for {path}")
            time.sleep(0.002)  # short polls: a waiting worker starts soon after the handoff
        held.add(path)
        try:
            yield path
        finally:
            held.discard(path)
    finally:
        os.close(fd)  # closing our only descriptor releases the flock


@functools.lru_cache(maxsize=1024)
def _common_dir_cached(repo_path: str) -> Path:
    """A repository's common dir does not move; the lock is taken often (every worktree add)."""
    return common_dir(repo_path)


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def is_repository(path: StrPath) -> bool:
    """True if ``path`` itself is a repository (bare, or a worktree's top level); a plain
    directory inside some other repository does not count."""
    here = Path(path)
    if not here.is_dir() or (git_dir := _ok(here, "rev-parse", "--absolute-git-dir")) is None:
        return False
    if Path(git_dir).resolve() == here.resolve():
        return True  # a bare repository (or a .git directory)
    top = _ok(here, "rev-parse", "--show-toplevel")
    return top is not None and Path(top).resolve() == here.resolve()


def is_bare(path: StrPath) -> bool:
    return run(path, "rev-parse", "--is-bare-repository") == "true"


def common_dir(path: StrPath) -> Path:
    """The git dir all worktrees share (where the lock and worktree admin dirs live)."""
    return Path(run(path, "rev-parse", "--path-format=absolute", "--git-common-dir")).resolve()


def init_repository(path: StrPath, initial_branch: str = "main", bare: bool = False) -> Path:
    validate_ref_name(initial_branch)
    target = Path(path).resolve()
    target.mkdir(parents=True, exist_ok=True)
    flags = ["--bare"] if bare else []
    run(target, "init", "-q", *flags, f"--initial-branch={initial_branch}", "--", str(target))
    return target


def rev_parse(repo: StrPath, rev: str) -> str | None:
    """The commit ``rev`` names, or None; ``rev`` is never taken as an option."""
    return _ok(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")


def _commit(repo: StrPath, rev: str) -> str:
    # A full object id (what git itself gave us) needs no round trip; a wrong one still fails
    # in the command that uses it.
    if _OID.fullmatch(rev):
        return rev
    if (sha := rev_parse(repo, rev)) is None:
        raise GitError(f"unknown revision {rev!r} in {repo}")
    return sha


def _ref_value(repo: StrPath, ref: str) -> str | None:
    return _ok(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", ref)


def resolve_branch(repo: StrPath, branch: str) -> str | None:
    """Commit of local branch ``branch`` (never a same-named tag), or None."""
    return rev_parse(repo, f"refs/heads/{validate_ref_name(branch)}")


def branch_exists(repo: StrPath, branch: str) -> bool:
    return resolve_branch(repo, branch) is not None


def create_branch(repo: StrPath, branch: str, start: str, *, force: bool = False) -> str:
    """Create ``branch`` at ``start``; a no-op if already there, so retries are safe. Raises
    RefMoved if it is elsewhere, unless ``force`` (refused by git if it is checked out)."""
    sha, ref = _commit(repo, start), f"refs/heads/{validate_ref_name(branch)}"
    current = _ref_value(repo, ref)
    if current is None:
        try:
            update_ref(repo, ref, sha, ZERO_OID, message=f"gastown: create {branch}")
        except RefMoved:
            current = _ref_value(repo, ref)
    if current in (None, sha):
        return sha
    if not force:
        raise RefMoved(f"branch {branch!r} already exists at {current[:12]}, not {sha[:12]}")
    run(repo, "branch", "--force", branch, sha)
    return sha


def delete_branch(repo: StrPath, branch: str, force: bool = False) -> bool:
    """Delete ``branch``; False if it did not exist. Without ``force`` git keeps unmerged
    branches."""
    if not branch_exists(repo, branch):
        return False
    run(repo, "branch", "-D" if force else "-d", branch)
    return True


def update_ref(repo: StrPath, ref: str, new: str, old: str, *, message: str = "gastown") -> None:
    """Move ``ref`` from ``old`` to ``new`` atomically (zero oid = absent; zero ``new``
    deletes). Raises RefMoved if it is not at ``old``: concurrent landers never clobber."""
    if not ref.startswith("refs/"):
        raise InvalidRefName(f"invalid ref {ref!r}: must start with 'refs/'")
    _check_ref(ref, "ref")
    if not (_OID.fullmatch(new) and _OID.fullmatch(old)):
        raise GitError(f"not full object ids: {new!r}, {old!r}")
    change = ["-d", ref, old] if set(new) == {"0"} else [ref, new, old]
    args = ["update-ref", "--no-deref", "-m", message, *change]
    status, out, err = _execute(repo, args)
    if status == 0:
        return
    current, expected = _ref_value(repo, ref), (None if set(old) == {"0"} else old)
    if current != expected:
        where = f"at {current[:12]}" if current else "absent"
        text = f"{ref} moved: it is {where}, expected {expected or 'absent'}"
        raise RefMoved(text, args, status, err, out)
    raise _failure(args, status, err, out)


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


def ahead_behind(repo: StrPath, ref: str, target: str) -> tuple[int, int]:
    """(commits on ``ref`` not on ``target``, commits on ``target`` not on ``ref``)."""
    a, b = _commit(repo, ref), _commit(repo, target)
    behind, ahead = run(repo, "rev-list", "--left-right", "--count", f"{b}...{a}").split()
    return int(ahead), int(behind)


def merge_base(repo: StrPath, a: str, b: str) -> str | None:
    return _ok(repo, "merge-base", _commit(repo, a), _commit(repo, b))


@dataclass(frozen=True)
class Commit:
    sha: str
    subject: str
    author: str
    email: str


def commits_between(repo: StrPath, base: str, head: str) -> list[Commit]:
    """Commits reachable from ``head`` but not from ``base``, oldest first."""
    span = f"{_commit(repo, base)}..{_commit(repo, head)}"
    fmt = "--format=%H%x1f%an%x1f%ae%x1f%s"
    out = run(repo, "log", "--no-color", "--no-show-signature", "-z", "--reverse", fmt, span)
    commits = []
    for record in filter(None, out.split("\0")):
        sha, author, email, subject = record.split("\x1f", 3)
        commits.append(Commit(sha, subject, author, email))
    return commits


@dataclass(frozen=True)
class FileChange:
    path: str
    added: int | None  # None for binary files
    deleted: int | None
    status: str  # A, M, D, R, C or T
    old_path: str | None = None  # for renames and copies


def diff_numstat(repo: StrPath, base: str, head: str) -> list[FileChange]:
    """Per-file line counts; ``-z`` keeps renamed and oddly named paths unambiguous."""
    b, h = _commit(repo, base), _commit(repo, head)
    tokens = run(repo, "diff-tree", "-r", "-M", "--raw", "--numstat", "-z", b, h).split("\0")
    raw: list[tuple[str, str | None, str]] = []
    counts: list[tuple[int | None, int | None]] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.startswith(":"):  # raw record: ":modes oids status", then path(s)
            status = token.split()[-1][0]
            two = status in "RC"
            raw.append((status, tokens[i + 1] if two else None, tokens[i + 1 + two]))
            i += 2 + two
        elif token:  # numstat record: "added\tdeleted\tpath", or "...\t" + old + new
            added, deleted, path = token.split("\t", 2)
            counts.append((_count(added), _count(deleted)))
            i += 1 if path else 3
        else:
            i += 1
    return [
        FileChange(path, added, deleted, status, old)
        for (status, old, path), (added, deleted) in zip(raw, counts, strict=True)
    ]


def _count(text: str) -> int | None:
    return None if text == "-" else int(text)  # "-" marks a binary file


def changed_paths(repo: StrPath, base: str, head: str) -> list[str]:
    """Every path touched; a rename lists both its old and new path."""
    b, h = _commit(repo, base), _commit(repo, head)
    out = run(repo, "diff-tree", "-r", "--no-renames", "--name-only", "-z", b, h)
    return [p for p in out.split("\0") if p]


# git picks a language-aware hunk-header driver (`def method(` rather than the enclosing
# `class`) only through attributes; these defaults yield to the repository's own.
_DRIVERS = "py:python pyi:python go:golang rs:rust java:java kt:kotlin rb:ruby php:php cs:csharp"
_DRIVERS += " c:cpp h:cpp cc:cpp cpp:cpp hpp:cpp sh:bash css:css md:markdown"
_ATTRIBUTES = "".join(f"*.{pair.replace(':', ' diff=')}\n" for pair in _DRIVERS.split())


def _diff(repo: StrPath, base: str, head: str, context: int, paths: list[str] | None) -> str:
    b, h = _commit(repo, base), _commit(repo, head)
    config = ["-c", "core.quotePath=false"]
    attributes = common_dir(repo) / "gastown-diff-attributes"
    try:
        if not attributes.is_file() or attributes.read_text() != _ATTRIBUTES:
            scratch = attributes.with_name(f"{attributes.name}.{uuid.uuid4().hex}")
            scratch.write_text(_ATTRIBUTES)
            os.replace(scratch, attributes)
        config += ["-c", f"core.attributesFile={attributes}"]
    except OSError:
        logger.warning("cannot write %s; hunk headers use git's defaults", attributes)
    flags = ["--no-color", "--no-ext-diff", "--no-textconv", "--no-relative", "-M", f"-U{context}"]
    flags += ["--src-prefix=a/", "--dst-prefix=b/", b, h, "--", *(paths or [])]
    return run(repo, *config, "--literal-pathspecs", "diff", *flags)


_HUNK = re.compile(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@ ?(.*)$")
_DEFINITION = re.compile(
    r"^\s*(?:(?:export|default|public|private|protected|internal|static|abstract|final|async"
    r"|override|pub(?:\([^)]*\))?)\s+)*(?:def|class|function\*?|func|fn|interface|struct"
    r"|trait|enum)\s+(?:\([^)]*\)\s*)?([A-Za-z_$][\w$]*)"
)
_CALL = re.compile(r"([A-Za-z_$][\w$]*)\s*\(")
_KEYWORDS = {"if", "for", "while", "switch", "return", "catch", "elif", "with"}


def _header_symbol(header: str) -> str | None:
    if m := _DEFINITION.match(header):
        return m.group(1)
    return next((n for n in _CALL.findall(header) if n not in _KEYWORDS), None)


def _diff_path(text: str) -> str | None:
    text = text.rstrip("\t")  # git appends a tab to names containing spaces
    if text.startswith('"') and text.endswith('"'):  # C-quoted name
        raw = codecs.escape_decode(text[1:-1].encode("utf-8", "surrogateescape"))[0]
        text = raw.decode("utf-8", "surrogateescape")
    return None if text == "/dev/null" else text[2:]


def diff_symbols(
    repo: StrPath, base: str, head: str, paths: list[str] | None = None
) -> dict[str, list[str]]:
    """Function/class names each file's hunks touch: from hunk headers (the enclosing
    definition) and from added/removed lines that are definitions. Hunk lengths are
    counted, so a removed ``-- comment`` line is never taken for a ``---`` header."""
    symbols: dict[str, list[str]] = {}
    path = old_path = None
    old_left = new_left = 0
    for line in _diff(repo, base, head, 0, paths).split("\n"):
        name = None
        if old_left > 0 or new_left > 0:
            if line.startswith("\\"):
                continue  # "\ No newline at end of file"
            old_left -= 0 if line.startswith("+") else 1
            new_left -= 0 if line.startswith("-") else 1
            if line[:1] in ("+", "-") and (m := _DEFINITION.match(line[1:])):
                name = m.group(1)
        elif line.startswith("diff --git "):
            path = old_path = None
        elif line.startswith("--- "):
            old_path = _diff_path(line[4:])
        elif line.startswith("+++ "):
            path = _diff_path(line[4:]) or old_path
        elif m := _HUNK.match(line):
            old_left, new_left = int(m.group(1) or 1), int(m.group(2) or 1)
            name = _header_symbol(m.group(3))
        if name and path is not None and name not in symbols.setdefault(path, []):
            symbols[path].append(name)
    return symbols


def diff_excerpt(
    repo: StrPath, base: str, head: str, paths: list[str] | None = None, max_lines: int = 40
) -> str:
    """The start of the patch, cut to ``max_lines`` lines for prompts and UIs."""
    lines = _diff(repo, base, head, 3, paths).splitlines()
    if len(lines) > max_lines:
        lines = [*lines[:max_lines], f"... ({len(lines) - max_lines} more lines)"]
    return "\n".join(lines)


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


def is_ancestor(repo: StrPath, ancestor: str, descendant: str) -> bool:
    """Whether ``ancestor`` is reachable from ``descendant`` (already landed, for example)."""
    a, d = _commit(repo, ancestor), _commit(repo, descendant)
    status, out, err = _execute(repo, ["merge-base", "--is-ancestor", a, d])
    if status not in (0, 1):
        raise _failure(["merge-base", "--is-ancestor", a, d], status, err, out)
    return status == 0


def rev_list(repo: StrPath, base: str, head: str, *, no_merges: bool = False) -> list[str]:
    """Commits in ``base..head``, oldest first."""
    flags = ["--no-merges"] if no_merges else []
    b, h = _commit(repo, base), _commit(repo, head)
    out = run(repo, "rev-list", "--reverse", *flags, f"{b}..{h}")
    return out.split() if out else []


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


def rev_count(repo: StrPath, base: str, head: str) -> int:
    """How many commits ``base..head`` holds."""
    b, h = _commit(repo, base), _commit(repo, head)
    return int(run(repo, "rev-list", "--count", f"{b}..{h}"))


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


def tree_of(repo: StrPath, commit: str) -> str:
    """The tree object id of a commit."""
    return run(
        repo, "rev-parse", "--verify", "--end-of-options", f"{_commit(repo, commit)}^{{tree}}"
    )
