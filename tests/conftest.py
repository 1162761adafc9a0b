"""Shared fixtures: real git repositories, the Redis that settings select, a real Celery worker."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from django.conf import settings

BASE_DIR = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def redis_server():
    """The Redis the settings point at: REDIS_URL when set, else an embedded server started here.
    Autouse: any test may enqueue a task after commit, and publishing needs a broker."""
    from gastown_site import embedded

    if settings.REDIS_URL:
        yield settings.REDIS_URL
        return
    socket_path = settings.EMBEDDED_REDIS_SOCKET
    process = None
    if not embedded.redis_ping(socket_path):
        process = embedded.redis_start(socket_path, settings.DATA_DIR / "redis")
    yield f"unix://{socket_path}"
    if process is not None:
        embedded.redis_stop(process)


def subprocess_env() -> dict[str, str]:
    """Environment for a server or worker process that shares this test run's database,
    data dir, broker queue and channel prefix."""
    from django.db import connection

    db = connection.settings_dict
    env = {
        **os.environ,
        "GASTOWN_DATA_DIR": str(settings.DATA_DIR),
        "GASTOWN_QUEUE": settings.CELERY_TASK_DEFAULT_QUEUE,
        "GASTOWN_CHANNEL_PREFIX": settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"],
        "SECRET_KEY": "test-process-" + uuid.uuid4().hex,
        "DJANGO_SETTINGS_MODULE": "gastown_site.settings",
        "PYTHONUNBUFFERED": "1",
        # the test servers speak plain HTTP on loopback (production redirects to HTTPS)
        "GASTOWN_SSL_REDIRECT": "0",
        "GASTOWN_SECURE_COOKIES": "0",
        "GASTOWN_HSTS_SECONDS": "0",
    }
    if connection.vendor == "sqlite":
        env["GASTOWN_SQLITE_PATH"] = str(db["NAME"])
    else:
        password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
        env["DATABASE_URL"] = (
            f"postgres://{db['USER']}{password}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}"
            f"/{db['NAME']}"
        )
    return env


def stop_process_group(process: subprocess.Popen, timeout: float = 30) -> None:
    """Stop a server or worker and everything it started (it may already be gone)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def worker_process(*extra_args: str, env: dict[str, str] | None = None, purge: bool = True):
    """A real Celery worker: a separate `celery worker` process (prefork, as deployed) on the
    real broker and the test database. `extra_args` e.g. `--beat` for the periodic tasks; `env`
    more environment (the fault tests' GASTOWN_FAULT_PAUSE); `purge=False` keeps what is queued
    (a worker started after another was killed). Its output is in `app.worker_log` (a path);
    the process is `app.worker_process`."""
    from gastown_site.celery import app

    # Tasks queued by earlier tests point at rows that are gone; drop them.
    if purge:
        with app.connection_for_write() as conn:
            conn.default_channel.queue_purge(settings.CELERY_TASK_DEFAULT_QUEUE)
    name = f"test-{uuid.uuid4().hex[:8]}@localhost"
    log_path = settings.DATA_DIR / f"worker-{name}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "gastown_site",
                "worker",
                "-P",
                "prefork",
                "-c",
                "4",
                "-n",
                name,
                "--without-mingle",
                "--without-gossip",
                "-l",
                "INFO",
                *extra_args,
            ],
            env={**subprocess_env(), **(env or {})},
            cwd=BASE_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while not app.control.ping(destination=[name], timeout=0.5):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start: {log_path.read_text()[-3000:]}")
        app.worker_log = log_path
        app.worker_process = process
        yield app
    finally:
        stop_process_group(process)


@pytest.fixture
def celery_worker(redis_server, transactional_db):
    """A real Celery worker process. Tests that use it need committed data."""
    with worker_process() as app:
        yield app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def web_process():
    """The real ASGI server as `make run` starts it (daphne, through gastown_site.web) on a free
    loopback port, sharing the test database and channel layer. Yields (base URL, log path)."""
    port = free_port()
    log_path = settings.DATA_DIR / f"daphne-{port}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gastown_site.web",
                "-b",
                "127.0.0.1",
                "-p",
                str(port),
                "gastown_site.asgi:application",
            ],
            env=subprocess_env(),
            cwd=BASE_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, process, log_path)
        yield base, log_path
    finally:
        stop_process_group(process)


@pytest.fixture
def asgi_server(redis_server, transactional_db):
    """The real ASGI server (see `web_process`). Yields its base URL."""
    with web_process() as (base, _):
        yield base


def launcher_start(env: dict[str, str], port: int, log_path: Path) -> subprocess.Popen:
    """`make run`'s launcher (`gastown_site.run --no-demo`) in its own session, its output in
    `log_path`: stop it with `stop_process_group`."""
    with open(log_path, "w") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "gastown_site.run", "--port", str(port), "--no-demo"],
            cwd=BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_healthy(base: str, process: subprocess.Popen, log_path: Path, seconds: float = 60) -> None:
    """Wait until the server at `base` answers /healthz (its log's tail in the error if it
    exits or takes longer than `seconds`)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start: {log_path.read_text()[-3000:]}")
        time.sleep(0.1)


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
        env={
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@t",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t",
            "HOME": str(cwd),
            "PATH": "/usr/bin:/bin",
        },
    ).stdout.strip()


@pytest.fixture
def repo_root(settings, tmp_path) -> Path:
    """A data root for repositories; settings allow repositories only under it."""
    root = tmp_path / "repositories"
    root.mkdir()
    settings.GASTOWN_REPOSITORY_ROOTS = [root.resolve()]
    settings.GASTOWN_WORKTREE_ROOT = (tmp_path / "worktrees").resolve()
    return root


@pytest.fixture
def git_repo(repo_root) -> Path:
    """A real repository on `main` with two commits."""
    path = repo_root / "app"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "README.md").write_text("# app\n")
    (path / "auth").mkdir()
    (path / "auth" / "tokens.py").write_text("def make_token(user):\n    return f'v1:{user}'\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    (path / "docs").mkdir()
    (path / "docs" / "index.md").write_text("docs\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "docs")
    return path
