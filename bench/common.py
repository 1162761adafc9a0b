"""Shared helpers for the benchmarks in `bench/`.

- :func:`bench_environment`: a throwaway Gas Town installation (fresh data dir, migrated
  database, Redis) set up *before* Django starts. Nothing set: SQLite and an embedded Redis
  under a temporary directory. `DATABASE_URL` set: a database `gastown_bench_<pid>` is created
  on that server and dropped at the end. `REDIS_URL` set: that Redis, with a private queue.
- :func:`celery_worker_process`: a real `celery -A gastown_site worker` process with the same
  environment (like production), stopped at the end; :func:`celery_worker_idle` waits until it
  has nothing left to do.
- :func:`generate_repository`: a repository of many small text files in one commit, written
  with `git fast-import` (one process, a packed repository like a clone).
- :func:`patch_git`: wrap a function of `rigs.git` wherever its modules bind it (to count
  and time git commands).
- timing, percentiles and a plain-text table.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

BASE_DIR = Path(__file__).resolve().parent.parent

# The same identity and safety settings the product uses for git (rigs.git.run._BASE_ENV).
GIT_ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_OPTIONAL_LOCKS": "0",
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@localhost",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@localhost",
}


@contextmanager
def patch_git(name: str, replacement) -> Iterator[None]:
    """Replace `name` (`_execute`, `repository_lock`, ...) in the `rigs.git` package and in each
    of its modules that binds it (they import it from `rigs.git.run`), then restore it."""
    import importlib

    importlib.import_module("rigs.git")
    saved = [
        (module, getattr(module, name))
        for module_name, module in list(sys.modules.items())
        if (module_name == "rigs.git" or module_name.startswith("rigs.git."))
        and hasattr(module, name)
    ]
    for module, _ in saved:
        setattr(module, name, replacement)
    try:
        yield
    finally:
        for module, real in saved:
            setattr(module, name, real)


def git(cwd: str | Path, *args: str, stdin: bytes | None = None, check: bool = True) -> str:
    """Run git directly (no GitPython): the raw baseline and the benchmark's own setup."""
    result = subprocess.run(
        ["git", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        env=GIT_ENV,
        check=False,
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"git {' '.join(args)} failed ({result.returncode}): {result.stderr.decode()[-2000:]}"
        )
    return result.stdout.decode().strip()


# --- statistics and output ---------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear interpolation between closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass
class Stopwatch:
    started: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0

    def stop(self) -> float:
        self.seconds = time.perf_counter() - self.started
        return self.seconds


@contextmanager
def timed() -> Iterator[Stopwatch]:
    watch = Stopwatch()
    try:
        yield watch
    finally:
        watch.stop()


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table; numbers right-aligned. Also valid Markdown."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [
        bool(rows) and all(_is_number(row[i]) or row[i] == "" for row in rows)
        for i in range(len(headers))
    ]

    def line(row: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if numeric[i] else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "| " + " | ".join(parts) + " |"

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if numeric[i] else "-" * (w + 2) for i, w in enumerate(widths)
        )
        + "|"
    )
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


# --- repository generation -----------------------------------------------------------------------

# fmt: off
_WORDS = [
    "account", "auth", "billing", "cache", "catalog", "checkout", "config", "core", "data",
    "email", "events", "export", "feed", "files", "gateway", "geo", "graph", "import", "index",
    "inventory", "jobs", "ledger", "media", "metrics", "notify", "orders", "payments", "pricing",
    "profile", "queue", "rates", "reports", "search", "session", "shipping", "social", "storage",
    "sync", "tax", "tenant", "tokens", "users", "vault", "webhooks",
]
# fmt: on


def _module_text(rng: random.Random, name: str) -> bytes:
    """A small, plausible Python module (20-70 lines, ~1-3 KB), unique per file."""
    lines = [f'"""{name}: {" ".join(rng.sample(_WORDS, 4))}."""', "", "import logging", ""]
    lines.append("logger = logging.getLogger(__name__)")
    for _ in range(rng.randint(2, 6)):
        func = f"{rng.choice(_WORDS)}_{rng.choice(_WORDS)}_{rng.randrange(1000)}"
        args = ", ".join(rng.sample(_WORDS, rng.randint(1, 3)))
        lines += ["", "", f"def {func}({args}):", f'    """Handle {rng.choice(_WORDS)}."""']
        for _ in range(rng.randint(3, 9)):
            a, b = rng.sample(_WORDS, 2)
            lines.append(f"    {a} = {b} * {rng.randrange(100)} + {rng.randrange(1000)}")
        lines.append(f"    logger.debug('{func} %s', {args.split(', ')[0]})")
        lines.append(f"    return {rng.choice(_WORDS)}")
    return ("\n".join(lines) + "\n").encode()


def generate_repository(
    path: Path, *, files: int, dirs: int, seed: int = 1, branch: str = "main"
) -> list[str]:
    """Make a repository at ``path`` with ``files`` small text files spread evenly over
    ``dirs`` leaf directories (``src/<area>/<part>``), in one commit on ``branch``, checked
    out. Returns the leaf directories (relative paths).

    Repacked after the import, as git-fast-import(1) advises ("PACKFILE OPTIMIZATION"), so
    that the pack is like any cloned or gc'ed repository's: fast-import stores each blob as
    a delta of the one before it, in chains up to 50 deep, so reading one file out of order
    (a sparse checkout) cost up to 50 delta applications."""
    rng = random.Random(seed)
    areas = max(1, round(dirs**0.5))
    leaves = []
    for i in range(dirs):
        area, part = divmod(i, areas)
        suffix = area // len(_WORDS) or ""  # more areas than words: account1, ...
        leaves.append(f"src/{_WORDS[area % len(_WORDS)]}{suffix}/part_{part:02d}")
    stream = bytearray()
    entries = []
    for n in range(files):
        leaf = leaves[n % dirs]
        name = f"{leaf}/{rng.choice(_WORDS)}_{n:05d}.py"
        blob = _module_text(rng, name)
        stream += b"blob\nmark :%d\ndata %d\n%s\n" % (n + 1, len(blob), blob)
        entries.append((n + 1, name))
    message = f"{files} files in {dirs} directories\n".encode()
    stamp = b"Bench <bench@localhost> 1795000000 +0000"
    stream += b"commit refs/heads/%s\n" % branch.encode()
    stream += b"author %s\ncommitter %s\n" % (stamp, stamp)
    stream += b"data %d\n%s\n" % (len(message), message)
    for mark, name in entries:
        stream += b"M 100644 :%d %s\n" % (mark, name.encode())
    stream += b"\n"
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", f"--initial-branch={branch}")
    git(path, "fast-import", "--quiet", stdin=bytes(stream))
    git(path, "repack", "-adfq")
    git(path, "reset", "-q", "--hard", branch)
    return leaves


# --- the throwaway installation ------------------------------------------------------------------


@dataclass
class BenchEnv:
    data_dir: Path
    queue: str
    database: str  # what the report prints: "SQLite (embedded)" or "PostgreSQL <name>"
    broker: str
    worker_env: dict[str, str]
    notes: list[str] = field(default_factory=list)


def _postgres_throwaway(url: str, name: str) -> tuple[str, str]:
    """Create database ``name`` on the server of ``url``; return (its URL, the admin URL)."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return urlunsplit(parts._replace(path=f"/{name}")), admin


def _postgres_drop(admin_url: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def _redis_forget_queue(url: str, queue: str) -> None:
    """Delete the private queue's keys from a shared Redis (kombu: the list, its priority
    lists and the exchange binding)."""
    import redis

    try:
        client = redis.Redis.from_url(url)
        keys = [*client.scan_iter(match=f"{queue}*"), f"_kombu.binding.{queue}"]
        client.delete(*keys)
    except redis.RedisError as exc:
        print(f"warning: could not delete queue {queue} from Redis: {exc}", file=sys.stderr)


@contextmanager
def bench_environment(
    prefix: str = "gastown-bench-", keep: bool = False, parent: str | Path | None = None
) -> Iterator[BenchEnv]:
    """Set the environment, start Django on it, migrate, start Redis if embedded; undo it all
    at the end (``keep`` leaves the data dir for inspection). The data dir is a new
    directory under ``parent`` (default: the system's temporary directory)."""
    if "django.conf" in sys.modules and sys.modules["django.conf"].settings.configured:
        raise RuntimeError("bench_environment() must run before Django is set up")
    if str(BASE_DIR) not in sys.path:
        sys.path.insert(0, str(BASE_DIR))
    data_dir = Path(tempfile.mkdtemp(prefix=prefix, dir=parent)).resolve()
    db_name = f"gastown_bench_{os.getpid()}"
    admin_url = ""
    env = {
        "DJANGO_SETTINGS_MODULE": "gastown_site.settings",
        "GASTOWN_DATA_DIR": str(data_dir),
        "GASTOWN_REPOSITORY_ROOTS": str(data_dir / "repositories"),
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(BASE_DIR), os.environ.get("PYTHONPATH")])),
    }
    if not os.environ.get("SECRET_KEY"):
        env["SECRET_KEY"] = "bench-" + secrets.token_urlsafe(40)
    database = "SQLite (embedded, WAL)"
    # A private queue: on a shared Redis no other worker takes the benchmark's tasks.
    queue = f"gastown-bench-{os.getpid()}"
    redis_process = None
    try:
        if url := os.environ.get("DATABASE_URL"):
            env["DATABASE_URL"], admin_url = _postgres_throwaway(url, db_name)
            database = f"PostgreSQL, throwaway database {db_name}"
        os.environ.update(env)
        import django

        django.setup()
        from django.conf import settings
        from django.core.management import call_command

        from gastown_site import embedded
        from gastown_site.celery import app

        call_command("migrate", verbosity=0, interactive=False)
        if settings.REDIS_URL:
            broker = "Redis at REDIS_URL (private queue)"
        else:
            redis_process = embedded.redis_start(
                settings.EMBEDDED_REDIS_SOCKET, settings.DATA_DIR / "redis"
            )
            broker = f"embedded Redis on {settings.EMBEDDED_REDIS_SOCKET}"
        # (the namespaced key is what the Django settings set, and it wins)
        app.conf.CELERY_TASK_DEFAULT_QUEUE = queue
        if app.amqp.default_queue.name != queue:
            raise RuntimeError("the Celery app was configured before the benchmark could")
        yield BenchEnv(
            data_dir=data_dir,
            queue=queue,
            database=database,
            broker=broker,
            # processes the worker starts (agent supervisors) publish to the same queue
            worker_env={**os.environ, "GASTOWN_QUEUE": queue},
        )
    finally:
        try:
            from django.db import connections

            connections.close_all()
            for conn in connections.all():
                if hasattr(conn, "close_pool"):  # PostgreSQL's pool keeps connections open
                    conn.close_pool()
        except Exception:  # best effort on the way out
            pass
        if redis_process is not None:
            from gastown_site import embedded

            embedded.redis_stop(redis_process)
        elif os.environ.get("REDIS_URL"):
            _redis_forget_queue(os.environ["REDIS_URL"], queue)
        if admin_url:
            try:
                _postgres_drop(admin_url, db_name)
            except Exception as exc:
                print(f"warning: could not drop database {db_name}: {exc}", file=sys.stderr)
        if keep:
            print(f"kept {data_dir}", file=sys.stderr)
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


def worker_hostname() -> str:
    """The Celery hostname of this benchmark's worker (`celery_worker_process`)."""
    return f"bench-{os.getpid()}@{socket.gethostname()}"


@contextmanager
def celery_worker_process(
    env: BenchEnv,
    concurrency: int,
    pool: str = "prefork",
    timeout: float = 60.0,
    extra_args: Sequence[str] = (),
) -> Iterator[subprocess.Popen]:
    """A real `celery -A gastown_site worker` process on the benchmark's queue; returns once
    it answers a ping. Its log is ``<data dir>/worker.log``. ``extra_args``: more worker
    options, e.g. ``("--beat", "--schedule", path)`` for the periodic tasks."""
    from gastown_site.celery import app

    name = worker_hostname()
    log = open(env.data_dir / "worker.log", "wb")  # noqa: SIM115 - closed below
    command = [
        sys.executable, "-m", "celery", "-A", "gastown_site", "worker",
        "--queues", env.queue, "--hostname", name, "--pool", pool,
        "--concurrency", str(concurrency), "--loglevel", "WARNING",
        "--without-mingle",  # startup only: no other workers to sync with
        *extra_args,
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=BASE_DIR, env=env.worker_env, stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"worker exited with {process.returncode}: {_tail(env)}")
            if app.control.ping(destination=[name], timeout=0.5):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker did not answer within {timeout}s: {_tail(env)}")
        yield process
    finally:
        stop_process(process, timeout=30)
        log.close()


def celery_worker_idle(
    env: BenchEnv, quiet: float = 1.0, timeout: float = 120.0, probe=None
) -> float:
    """Wait until the benchmark's worker has been idle for ``quiet`` seconds in a row: no task
    running or reserved, the private queue empty and ``probe()`` (optional: any value that
    changes while work is going on, e.g. the last event id) unchanged. Returns the seconds
    waited; raises after ``timeout``."""
    from gastown_site.celery import app

    name = worker_hostname()
    started = time.monotonic()
    calm_since: float | None = None
    last = probe() if probe else None
    while True:
        inspect = app.control.inspect(destination=[name], timeout=1.0, limit=1)
        busy = any((inspect.active() or {}).get(name, [])) or any(
            (inspect.reserved() or {}).get(name, [])
        )
        with app.connection_for_read() as connection:
            client = connection.default_channel.client
            waiting = sum(
                client.llen(key)
                for key in client.scan_iter(match=f"{env.queue}*")
                if client.type(key) in (b"list", "list")
            )
        seen = probe() if probe else None
        now = time.monotonic()
        if busy or waiting or seen != last:
            calm_since = None
        elif calm_since is None:
            calm_since = now
        elif now - calm_since >= quiet:
            return now - started
        last = seen
        if now - started > timeout:
            raise RuntimeError(f"the worker was still busy after {timeout:.0f}s: {_tail(env)}")
        time.sleep(0.1)


def stop_process(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM, then SIGKILL to its whole group if it does not stop in time."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _tail(env: BenchEnv, lines: int = 20) -> str:
    path = env.data_dir / "worker.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])
