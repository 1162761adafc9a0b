"""Shared fixtures: real git repositories, the Redis that settings select, a real Celery worker."""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings


@pytest.fixture(scope="session")
def redis_server():
    """The Redis the settings point at: REDIS_URL when set, else an embedded server started here."""
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


@pytest.fixture
def celery_worker(redis_server, transactional_db):
    """A real Celery worker: a separate `celery worker` process (prefork, as deployed) on the
    real broker and the test database. Tests that use it need committed data."""
    from django.db import connection

    from gastown_site.celery import app

    db = connection.settings_dict
    env = {
        **os.environ,
        "GASTOWN_DATA_DIR": str(settings.DATA_DIR),
        "GASTOWN_QUEUE": settings.CELERY_TASK_DEFAULT_QUEUE,
        "SECRET_KEY": "test-worker-" + uuid.uuid4().hex,
        "DJANGO_SETTINGS_MODULE": "gastown_site.settings",
    }
    if connection.vendor == "sqlite":
        env["GASTOWN_SQLITE_PATH"] = str(db["NAME"])
    else:
        password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
        env["DATABASE_URL"] = (
            f"postgres://{db['USER']}{password}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}"
            f"/{db['NAME']}"
        )
    # Tasks queued by earlier tests point at rows that are gone; drop them.
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(settings.CELERY_TASK_DEFAULT_QUEUE)
    name = f"test-{uuid.uuid4().hex[:8]}@localhost"
    log = open(settings.DATA_DIR / f"worker-{name}.log", "w")  # noqa: SIM115
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
        ],
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not app.control.ping(destination=[name], timeout=0.5):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start: {Path(log.name).read_text()[-3000:]}")
        yield app
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


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
