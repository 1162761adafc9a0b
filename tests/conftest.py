"""Shared fixtures: real git repositories, the Redis that settings select, a real Celery worker."""

import subprocess
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
    """A real Celery worker (threads in this process) consuming from the real broker.

    Tests that use it need committed data (hence `transactional_db`): the worker's threads have
    their own database connections.
    """
    from celery.contrib.testing.worker import start_worker

    from gastown_site.celery import app

    with start_worker(
        app,
        pool="threads",
        concurrency=4,
        perform_ping_check=False,
        shutdown_timeout=30,
        loglevel="WARNING",
    ):
        yield app


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
