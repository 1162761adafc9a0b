"""The one module that starts, inspects and kills agent processes (as rigs/git.py is for git).

A run is two processes: a supervisor (`python -m runner.supervisor RUN_ID`, in its own session,
so a worker restart does not take it down) and the agent command it starts in a new process
group. Stopping a run signals that whole group. Every process of a run carries
`GASTOWN_RUN_ID=<installation>:<id>` in its environment, which is how a pid is recognised as
still ours before it is signalled (pids are reused; two installations may share a machine).
"""

import contextlib
import fcntl
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings

BASE_DIR = Path(__file__).resolve().parent.parent
BIN_DIR = BASE_DIR / "bin"
RUN_MARKER = "GASTOWN_RUN_ID"
# What an agent inherits from the server's environment, besides what the runner sets: the
# server's own secrets (SECRET_KEY, DATABASE_URL...) never reach an agent.
PASSTHROUGH = (
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "TZ",
    "TERM",
    "TMPDIR",
    "SSL_CERT_FILE",
    "ANTHROPIC_API_KEY",
    "OPENAI_API_KEY",
    "GASTOWN_AGENT_PACE",
)


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
    """The agent's environment: who and where it is, how to reach Gas Town, `gt` on PATH."""
    env = {name: os.environ[name] for name in PASSTHROUGH if name in os.environ}
    path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    email = f"{agent_name}@agents.gastown.local"
    env.update(
        {
            # gt and gastown-agent first; not Gas Town's virtualenv (an agent's `pip install`
            # must not land in it)
            "PATH": os.pathsep.join([str(BIN_DIR), path]),
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
            "GIT_TERMINAL_PROMPT": "0",
            "PYTHONUNBUFFERED": "1",
            RUN_MARKER: run_marker(run_id),
        }
    )
    return env


def agent_spawn(command: str, *, cwd: str, env: dict[str, str]) -> subprocess.Popen:
    """Start the agent command in a new process group, output piped to the supervisor.
    The command is the operator's (like a gate command): a shell runs it; no data from rigs,
    beads or agents is ever pasted into it (they reach the agent as environment variables)."""
    return subprocess.Popen(
        ["/bin/sh", "-c", command],
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
            if ours and (entry / "stat").read_text().split()[2] != "Z":
                found.append(int(entry.name))
        except (OSError, IndexError):
            continue
    return found


def group_signal(pgid: int, signum: int) -> bool:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def run_terminate(run_id: int, pgid: int | None, grace: float) -> None:
    """SIGTERM the agent's process group, give it `grace` seconds, then SIGKILL whatever of the
    run is left (including processes that left the group, found by their marker)."""
    if pgid and process_is_run(pgid, run_id):
        group_signal(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _agent_processes(run_id):
            return
        time.sleep(0.1)
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
