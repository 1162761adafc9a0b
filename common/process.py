"""The one module that starts, inspects and kills processes (as rigs/git/run.py is for git):
commands that run code from a rig's branch (gates, setup commands) and agents' runs.

Everything that runs agent-written code gets an allow-listed environment (`command_environment`:
never the server's secrets) and, unless `GASTOWN_SANDBOX=none`, a bubblewrap sandbox
(`common.sandbox`, re-exported here: `Sandbox`, `worktree_sandbox`, `sandbox_argv`): the system
read-only, the server's data dir, worktrees, repositories and home hidden, only the paths the
command needs bound back, its own /tmp, no capabilities and its own PID namespace (so no
/proc/<server>/environ). The network is kept: agents call the API and their model.
docs/runner.md says what the sandbox does and does not stop.

A run is two processes: a supervisor (`python -m runner.supervisor RUN_ID`, in its own session,
so a worker restart does not take it down) and the agent command it starts in a new process
group (under the sandbox, bwrap leads that group). Stopping a run signals that whole group
(`agent_signal`). Every process of a run carries `GASTOWN_RUN_ID=<installation>:<id>` in its
environment, which is how a pid is recognised as still ours before it is signalled (pids are
reused; two installations may share a machine); processes inside the sandbox's PID namespace
are visible, with their host pids, in the host's /proc.
"""

import contextlib
import fcntl
import hashlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from common.sandbox import (  # noqa: F401  (the sandbox is part of this module's interface)
    AGENT_CLI_DIR,
    BASE_DIR,
    BIN_DIR,
    Sandbox,
    git_dirs,
    sandbox_argv,
    sandbox_mode,
    worktree_sandbox,
)

logger = logging.getLogger(__name__)

RUN_MARKER = "GASTOWN_RUN_ID"
# What a command inherits from the server's environment, besides what the caller sets: the
# server's own secrets (SECRET_KEY, DATABASE_URL, REDIS_URL...) never reach agent-written code.
PASSTHROUGH = ("USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TERM", "SSL_CERT_FILE")
# ... and what only an agent process gets on top (its model's key, the scripted agent's pace).
AGENT_PASSTHROUGH = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GASTOWN_AGENT_PACE")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
# The tail of a command's output that is kept (gate logs are shown on the board).
OUTPUT_TAIL_BYTES = 64 * 1024


# --- environment and sandbox -------------------------------------------------------------------


def _system_path() -> str:
    """The server's PATH without Gas Town's virtualenv (an agent's `pip install` must not land in
    it, and a gate must not import the server's packages by accident)."""
    venv_bin = str(Path(sys.prefix) / "bin") if sys.prefix != sys.base_prefix else None
    parts = [p for p in os.environ.get("PATH", DEFAULT_PATH).split(os.pathsep) if p != venv_bin]
    return os.pathsep.join(parts) or DEFAULT_PATH


def command_environment(
    extra: dict[str, str] | None = None, *, home: str | Path, agent: bool = False
) -> dict[str, str]:
    """The whole environment of a command that runs agent-written code: an allow-list of the
    server's harmless variables, a HOME of its own, a PATH without the server's virtualenv, and
    `extra` (set by the caller, never read from the server's environment)."""
    names = PASSTHROUGH + (AGENT_PASSTHROUGH if agent else ())
    env = {name: os.environ[name] for name in names if name in os.environ}
    env.update(
        {
            "HOME": str(home),
            "PATH": _system_path(),
            "TMPDIR": "/tmp",  # noqa: S108  (its own /tmp inside the sandbox)
            "GIT_TERMINAL_PROMPT": "0",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


def private_dir(path: Path) -> Path:
    """A directory only the server's user can enter (data dir files are private)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(OSError):
        path.chmod(0o700)
    return path


# --- one command, to completion ------------------------------------------------------------------


@dataclass
class CommandResult:
    exit_code: int | None  # None when it was killed at its time limit
    output: str  # the tail of stdout+stderr (OUTPUT_TAIL_BYTES at most)
    timed_out: bool
    seconds: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def command_run(
    command: str,
    *,
    cwd: str | Path,
    env: dict[str, str],
    timeout: float,
    sandbox: Sandbox | None,
) -> CommandResult:
    """Run an admin-configured shell command (a gate, a setup command) to completion in its own
    process group, sandboxed; kill the whole group at the time limit. `env` is the command's
    whole environment (build it with `command_environment`)."""
    started = time.monotonic()
    child = shell_spawn(command, cwd=cwd, env=env, sandbox=sandbox)
    result = _finished(child, timeout=timeout, started=started)
    # whatever the command left behind in its group goes with it
    group_signal(child.pid, signal.SIGKILL)
    return result


def program_run(
    argv: list[str], *, env: dict[str, str], timeout: float, cwd: str | Path | None = None
) -> CommandResult:
    """Run a program of the server's own (`pg_dump`, `pg_restore`: never agent-written code,
    so no sandbox and no shell) to completion in its own process group, killed at the time
    limit. `env` is its whole environment."""
    started = time.monotonic()
    return _finished(_group_popen(argv, cwd=cwd, env=env), timeout=timeout, started=started)


def _finished(child: subprocess.Popen, *, timeout: float, started: float) -> CommandResult:
    """Wait for `child` (its output on stdout); at the time limit kill its whole group."""
    timed_out = False
    try:
        raw, _ = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        group_signal(child.pid, signal.SIGKILL)
        raw, _ = child.communicate()
        timed_out = True
    return CommandResult(
        exit_code=None if timed_out else child.returncode,
        output=raw[-OUTPUT_TAIL_BYTES:].decode("utf-8", errors="replace"),
        timed_out=timed_out,
        seconds=time.monotonic() - started,
    )


def secrets_scrub(text: str, secrets: Iterable[str] | None = None) -> str:
    """`text` with every value of the server's secret settings replaced by `[redacted]`: a
    second line of defence for stored command output (the environment allow-list is the
    first)."""
    values = list(secrets) if secrets is not None else server_secret_values()
    for value in sorted({v for v in values if v and len(v) >= 6}, key=len, reverse=True):
        text = text.replace(value, "[redacted]")
    return text


SECRET_ENV_NAMES = (
    "SECRET_KEY",
    "DATABASE_URL",
    "REDIS_URL",
    "ANTHROPIC_API_KEY",
    "OPENAI_API_KEY",
)


def server_secret_values() -> list[str]:
    """The values that must never appear in anything shown to a reader."""
    values = [settings.SECRET_KEY, getattr(settings, "DATABASE_URL", ""), settings.REDIS_URL]
    values += [os.environ.get(name, "") for name in SECRET_ENV_NAMES]
    for name in os.environ:
        if name.endswith(("_TOKEN", "_SECRET", "_PASSWORD", "_API_KEY")):
            values.append(os.environ[name])
    return [v for v in values if v]


def run_marker(run_id: int) -> str:
    installation = hashlib.sha256(str(settings.DATA_DIR).encode()).hexdigest()[:12]
    return f"{installation}:{run_id}"


def host_name() -> str:
    return socket.gethostname()


@contextlib.contextmanager
def host_lock() -> Iterator[None]:
    """One scheduler at a time on this machine (counting free slots and taking one must not
    interleave with another worker process doing the same)."""
    path = settings.DATA_DIR / "runner.lock"
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def log_path_for(run_id: int) -> Path:
    directory = Path(settings.GASTOWN_RUN_LOG_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"run-{run_id}.log"


def supervisor_spawn(run_id: int, token: str) -> int:
    """Start the supervisor of a run, detached (own session). Returns its pid."""
    env = {**os.environ, "GASTOWN_RUN_TOKEN": token, RUN_MARKER: run_marker(run_id)}
    env.setdefault("DJANGO_SETTINGS_MODULE", "gastown_site.settings")
    with open(log_path_for(run_id), "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "runner.supervisor", str(run_id)],
            cwd=BASE_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    return process.pid


def agent_environment(
    *,
    run_id: int,
    token: str,
    rig_id: int,
    agent_name: str,
    worktree: str,
    branch: str,
) -> dict[str, str]:
    """The agent's environment: who and where it is, how to reach Gas Town, `gt` on PATH, a HOME
    of its own (Claude Code keeps session memory there)."""
    env = command_environment(home=agent_home(rig_id), agent=True)
    email = f"{agent_name}@agents.gastown.local"
    clis = AGENT_CLI_DIR / ".bin"
    env.update(
        {
            # gt and gastown-agent first, then the pinned agent CLIs (claude, codex)
            "PATH": os.pathsep.join(
                [str(BIN_DIR), *([str(clis)] if clis.is_dir() else []), env["PATH"]]
            ),
            "GT_URL": settings.GASTOWN_URL,
            "GT_TOKEN": token,
            "GT_RIG": str(rig_id),
            "GT_RUN": str(run_id),
            "GT_WORKTREE": worktree,
            "GT_BRANCH": branch,
            "GIT_AUTHOR_NAME": agent_name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": agent_name,
            "GIT_COMMITTER_EMAIL": email,
            RUN_MARKER: run_marker(run_id),
        }
    )
    return env


def agent_home(rig_id: int) -> Path:
    """A rig's agent's HOME: kept across its runs, private, outside every worktree."""
    return private_dir(Path(settings.DATA_DIR) / "homes" / f"rig-{rig_id}")


def agent_spawn(
    command: str, *, cwd: str, env: dict[str, str], sandbox: Sandbox | None = None
) -> subprocess.Popen:
    """Start the agent command in a new process group, output piped to the supervisor.
    The command is the admin's (like a gate command): a shell runs it; no data from rigs,
    beads or agents is ever pasted into it (they reach the agent as environment variables)."""
    return shell_spawn(command, cwd=cwd, env=env, sandbox=sandbox)


def shell_spawn(
    command: str, *, cwd: str | Path, env: dict[str, str], sandbox: Sandbox | None
) -> subprocess.Popen:
    """`/bin/sh -c command` in its own process group (sandboxed), stdout and stderr piped."""
    return _group_popen(sandbox_argv(["/bin/sh", "-c", command], sandbox), cwd=cwd, env=env)


def _group_popen(
    argv: list[str], *, cwd: str | Path | None, env: dict[str, str]
) -> subprocess.Popen:
    """A child in its own process group (killed as a group), no stdin, stdout and stderr piped
    together, no inherited descriptors."""
    return subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        close_fds=True,
    )


def process_is_run(pid: int | None, run_id: int) -> bool:
    """Whether `pid` is alive and belongs to run `run_id` (not a reused pid)."""
    if not pid or pid <= 0:
        return False
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{RUN_MARKER}={run_marker(run_id)}".encode() in environ.split(b"\0")


def run_processes(run_id: int) -> list[int]:
    """Every live process on this machine that belongs to run `run_id`."""
    marker = f"{RUN_MARKER}={run_marker(run_id)}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ours = marker in (entry / "environ").read_bytes().split(b"\0")
            # a zombie is already dead (its parent has not reaped it yet)
            state = _stat_fields(int(entry.name))[:1] if ours else []
            if state and state != ["Z"]:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def group_signal(pgid: int, signum: int) -> bool:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine and is not a zombie (a killed worker
    that still holds a lease is not). A pid reused by another process reads as alive: callers
    fall back on the lease's expiry then, never on a guess."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _stat_fields(pid)[:1] != ["Z"]


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name (which may hold spaces and parentheses):
    state, ppid, pgrp, ..."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _is_bwrap(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "bwrap"
    except OSError:
        return False


def agent_signal(pgid: int, signum: int) -> bool:
    """Signal an agent's process group. Under the sandbox bwrap leads the group, and bwrap dies
    at once on SIGTERM and takes everything inside with it (SIGKILL, --die-with-parent): a
    polite signal goes to the processes inside instead, so the agent gets its grace period.
    SIGKILL goes to the whole group (and bwrap's death then kills the rest)."""
    if signum == signal.SIGKILL or not _is_bwrap(pgid):
        return group_signal(pgid, signum)
    sent = False
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        fields = _stat_fields(pid)
        # bwrap itself, and the sandbox's init (bwrap too, it ignores such signals anyway)
        if len(fields) > 2 and fields[2] == str(pgid) and not _is_bwrap(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)
                sent = True
    return sent


def run_terminate(run_id: int, pgid: int | None, grace: float) -> None:
    """SIGTERM the agent's process group, give it `grace` seconds, then SIGKILL whatever of the
    run is left (including processes that left the group, found by their marker)."""
    if pgid and process_is_run(pgid, run_id):
        agent_signal(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _agent_processes(run_id):
            return
        time.sleep(0.1)
    if pgid and process_is_run(pgid, run_id):
        group_signal(pgid, signal.SIGKILL)
    for pid in _agent_processes(run_id):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _agent_processes(run_id: int) -> list[int]:
    """The run's processes except its supervisor (which records the exit and then leaves)."""
    return [pid for pid in run_processes(run_id) if not _is_supervisor(pid)]


def _is_supervisor(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"runner.supervisor" in cmdline
