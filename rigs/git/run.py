"""The one place in Gas Town that starts git: :func:`run` (GitPython's command layer, a
timeout, no shell, no prompts, a fixed identity, never an inherited ``GIT_DIR``), the error
types, and :func:`repository_lock`, which serializes worktree-list changes of one repository
(concurrent ``git worktree add`` fails intermittently).

The other modules of this package build commands and read their output; none starts a
process. User-given revisions are resolved behind ``--end-of-options`` (``refs.py``), names
are validated, paths go after ``--``.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import re
import signal
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from git.cmd import Git
from git.exc import GitCommandNotFound

logger = logging.getLogger("rigs.git")

StrPath = str | Path
Stdin = str | bytes | IO[bytes] | None
DEFAULT_TIMEOUT = 60.0
LOCK_TIMEOUT = 120.0
LOCK_FILE_NAME = "gastown-worktrees.lock"
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
    # Agents write into a repository's git dir: never let a config file there make one of our
    # commands run a program (a per-worktree `core.fsmonitor` is the classic one). Environment
    # config outranks every config file.
    "GIT_CONFIG_COUNT": "1",
    "GIT_CONFIG_KEY_0": "core.fsmonitor",
    "GIT_CONFIG_VALUE_0": "false",
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
    # O_NOFOLLOW: the git dir is writable by agents; a symlink here must not make us create
    # or open a file elsewhere
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
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


def common_dir(path: StrPath) -> Path:
    """The git dir all worktrees share (where the lock and worktree admin dirs live)."""
    return Path(run(path, "rev-parse", "--path-format=absolute", "--git-common-dir")).resolve()
