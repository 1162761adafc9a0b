"""The bubblewrap sandbox of commands that run agent-written code (agents, gates, setup
commands). `common.process` starts them; this module only builds the `bwrap` command line.

Inside: the system read-only; its own /tmp, /dev, and /proc of its own PID namespace (so no
/proc/<server>/environ); no capabilities (under root, bwrap would otherwise keep them all, and
`umount` would undo the hiding); the server's data dir, worktree root, run logs, repository
roots, home directory and database sockets hidden behind empty tmpfs mounts (files: /dev/null);
then only the paths the command needs bound back, read-write or read-only. The network is
kept: agents call the API and their model. docs/runner.md says what this does not stop.
"""

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings

BASE_DIR = Path(__file__).resolve().parent.parent
BIN_DIR = BASE_DIR / "bin"
# The agent CLIs pinned in package.json (Claude Code, Codex): `make agent-clis` installs them
# here; their .bin/ is on agents' PATH, and the directory is bound back read-only.
AGENT_CLI_DIR = BASE_DIR / "node_modules"
# Where database servers usually keep their unix sockets (peer or trust authentication there
# would let any local process of the server's user in).
SOCKET_DIRS = ("/run/postgresql", "/var/run/postgresql", "/run/mysqld", "/run/redis")


def sandbox_mode() -> str:
    """`bwrap` or `none` (settings.GASTOWN_SANDBOX, which defaults to bwrap when it is
    installed)."""
    return settings.GASTOWN_SANDBOX


@dataclass(frozen=True)
class Sandbox:
    """What a sandboxed command may touch besides the read-only system: `writable` paths are
    bound read-write, `readable` ones read-only (both at the same path inside), `hidden`
    directories are covered with an empty tmpfs on top of the server's own hidden roots.
    Mounts are made parents first, so a readable path inside a writable one stays read-only
    and a path inside a hidden one can be bound back."""

    writable: tuple[str, ...] = ()
    readable: tuple[str, ...] = ()
    hidden: tuple[str, ...] = ()


def git_dirs(worktree: str | Path) -> tuple[Path, Path] | None:
    """(the worktree's own git dir, the repository's common git dir) of a checkout: for a
    linked worktree, `.git` is a file naming its admin dir under the common dir's worktrees/;
    None when `worktree` is not a checkout."""
    worktree = Path(worktree)
    dot_git = worktree / ".git"
    if dot_git.is_dir():
        return dot_git.resolve(), dot_git.resolve()
    if not dot_git.is_file():
        return None
    target = dot_git.read_text().strip().removeprefix("gitdir:").strip()
    admin = (worktree / target).resolve()
    commondir = admin / "commondir"
    common = (admin / commondir.read_text().strip()).resolve() if commondir.is_file() else admin
    return admin, common


def worktree_sandbox(
    worktree: str | Path,
    *,
    home: str | Path | None = None,
    writable: tuple[str, ...] = (),
    hidden: tuple[str, ...] = (),
) -> Sandbox:
    """The sandbox of a command that works in a git worktree: the worktree, the repository's
    git dir (a commit writes objects and refs there) and `home` read-write. Read-only inside
    them: whatever would make the *server's* next git command in this repository run code of
    the agent's choosing (the repository's config and hooks/, the worktree's `.git` pointer,
    its admin dir's commondir and gitdir, the other worktrees' admin dirs)."""
    worktree = Path(worktree).resolve()
    rw: list[Path] = [worktree, *(Path(p) for p in writable)]
    ro: list[Path] = []
    dirs = git_dirs(worktree)
    if dirs is not None:
        admin, common = dirs
        hooks = common / "hooks"
        # both must exist to be bound read-only: else the agent could create them, and the
        # server's next git command there would run its hooks or its core.fsmonitor
        hooks.mkdir(exist_ok=True)
        (common / "config").touch(exist_ok=True)
        rw.append(common)
        ro += [common / "config", hooks]
        if (common / "worktrees").is_dir():
            ro.append(common / "worktrees")
        if admin != common:
            ro.append(worktree / ".git")
            rw.append(admin)
            ro += admin_dir_pinned(admin)
    if home is not None:
        rw.append(Path(home))
    return Sandbox(writable=tuple(map(str, rw)), readable=tuple(map(str, ro)), hidden=tuple(hidden))


def admin_dir_pinned(admin: Path) -> list[Path]:
    """The files of a worktree's (writable) git admin dir that must stay read-only: the pointers
    that would send the server's next git command elsewhere (`commondir`, `gitdir`) and the
    per-worktree config (`config.worktree`, read by git once any sparse rig turns on
    `extensions.worktreeConfig`: a `core.fsmonitor` there would run as the server). The config
    file is created empty when missing, so that it can be bound and not planted."""
    config = admin / "config.worktree"
    if not config.exists():
        config.touch()
    return [p for p in (admin / "commondir", admin / "gitdir", config) if p.exists()]


def _existing(paths) -> list[Path]:
    out: list[Path] = []
    for raw in paths:
        if not raw:
            continue
        path = Path(raw).resolve()
        if path != Path("/") and path.exists() and path not in out:
            out.append(path)
    return out


def _server_home() -> Path | None:
    home = os.environ.get("HOME")
    return Path(home).resolve() if home else None


def hidden_roots() -> list[Path]:
    """The directories agents must not see: the data dir (database, secret key, logs,
    sockets, other rigs' homes), every rig's worktree, run logs, every repository root, the
    server user's home (~/.ssh, ~/.pgpass, cloud credentials...) and database socket dirs."""
    home = _server_home()
    return _existing(
        [
            settings.DATA_DIR,
            settings.GASTOWN_WORKTREE_ROOT,
            settings.GASTOWN_RUN_LOG_DIR,
            *settings.GASTOWN_REPOSITORY_ROOTS,
            home if home is not None and home != Path("/") else None,
            *SOCKET_DIRS,
        ]
    )


def _masked_files(hidden: list[Path]) -> list[Path]:
    """Files outside the hidden roots that hold or reach the server's data: a SQLite database
    kept elsewhere (and its journal), unix sockets named in the settings."""
    candidates: list[str] = []
    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        name = str(database["NAME"])
        candidates += [name + suffix for suffix in ("", "-wal", "-shm", "-journal")]
    elif str(database.get("HOST") or "").startswith("/"):
        candidates += [str(p) for p in Path(database["HOST"]).glob(".s.PGSQL.*")]
    for url in (settings.REDIS_URL, getattr(settings, "CELERY_BROKER_URL", "")):
        parts = urlsplit(url or "")
        if parts.scheme in ("unix", "redis+socket") and parts.path:
            candidates.append(parts.path)
    return [
        path
        for path in _existing(candidates)
        if not path.is_dir() and not any(path.is_relative_to(root) for root in hidden)
    ]


def _path_tools(home: Path | None) -> list[Path]:
    """What agents still need under the server user's home: the directories its PATH points
    into (a pyenv, ~/.local/bin, ~/.cargo...), read-only, so the tools on PATH keep working."""
    if home is None:
        return []
    tools: list[Path] = []
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        if not entry or not os.path.isabs(entry):
            continue
        path = Path(entry).resolve()
        if path != home and path.is_relative_to(home):
            top = home / path.relative_to(home).parts[0]
            if top.is_dir() and top not in tools:
                tools.append(top)
    return tools


def sandbox_argv(argv: list[str], sandbox: Sandbox | None) -> list[str]:
    """`argv` wrapped in bubblewrap (or unchanged when the sandbox is off)."""
    if sandbox is None or sandbox_mode() != "bwrap":
        return argv
    hidden = hidden_roots() + _existing(sandbox.hidden)
    # (depth, order, option, source, destination): parents are mounted before children; at one
    # depth a tmpfs goes first, then read-write binds, then read-only ones on top.
    mounts: list[tuple[int, int, str, str, str]] = []
    for path in hidden:
        mounts.append((len(path.parts), 0, "--tmpfs", "", str(path)))
    for raw in dict.fromkeys(sandbox.writable):
        path = Path(raw)
        mounts.append((len(path.parts), 1, "--bind", str(path), str(path)))
    # gt and gastown-agent, the agent CLIs, and the tools on PATH, wherever they live (-try:
    # nothing to bind back when they are not there)
    for path in dict.fromkeys([BIN_DIR, AGENT_CLI_DIR, *_path_tools(_server_home())]):
        mounts.append((len(path.parts), 2, "--ro-bind-try", str(path), str(path)))
    for raw in dict.fromkeys(sandbox.readable):
        path = Path(raw)
        mounts.append((len(path.parts), 2, "--ro-bind", str(path), str(path)))
    for path in _masked_files(hidden):
        mounts.append((len(path.parts), 3, "--ro-bind", "/dev/null", str(path)))
    wrapped = [
        shutil.which("bwrap") or "bwrap",
        "--die-with-parent",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--cap-drop",
        "ALL",
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--tmpfs",
        "/tmp",  # noqa: S108  (an empty tmpfs of its own)
    ]
    for _, _, option, source, destination in sorted(mounts, key=lambda m: m[:2]):
        wrapped += [option, destination] if option == "--tmpfs" else [option, source, destination]
    return [*wrapped, "--", *argv]
