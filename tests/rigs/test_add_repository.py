"""Your own repository in two steps (issue 17, part 4): `manage.py add_repository`, then a rig
on it; and a path outside GASTOWN_REPOSITORY_ROOTS is refused naming the setting, its value and
how to set it, by the command and the API alike (one message, in `rigs.paths`)."""

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from rigs.models import Repository
from tests.conftest import (
    BASE_DIR,
    free_port,
    git,
    launcher_start,
    stop_process_group,
    wait_healthy,
)

MANAGE = str(BASE_DIR / "manage.py")


def fresh_env(data_dir: Path, roots: Path) -> dict[str, str]:
    """A process on its own embedded default: SQLite and Redis under `data_dir`, nothing of
    this test run's database, broker or settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GASTOWN_", "DJANGO_"))
        and k not in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DEBUG")
    }
    env.update(
        GASTOWN_DATA_DIR=str(data_dir),
        GASTOWN_REPOSITORY_ROOTS=str(roots),
        GASTOWN_DEMO="0",
        GASTOWN_WORKER_CONCURRENCY="2",
        PYTHONUNBUFFERED="1",
    )
    return env


def manage(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, MANAGE, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def new_repository(path: Path) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / "app.py").write_text("print('hello')\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


def api(base: str, token: str, method: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{base}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_add_repository_on_a_fresh_data_dir_then_a_rig_provisions(tmp_path):
    """The README's two steps, as a person runs them: `manage.py migrate` (as `make run` does)
    makes the data dir, `add_repository` registers a repository of their own (a relative path,
    outside the data dir: GASTOWN_REPOSITORY_ROOTS names its folder), then with the server
    running (`python -m gastown_site.run`, what `make run` starts) an agent asks for a rig on it,
    and a worker provisions it."""
    data_dir, src = tmp_path / "data", tmp_path / "src"
    new_repository(src / "My_App")
    env = fresh_env(data_dir, src)

    migrated = manage(tmp_path, env, "migrate", "--noinput", "-v0")
    assert migrated.returncode == 0, migrated.stderr
    assert (data_dir / "gastown.sqlite3").is_file()

    refused = manage(tmp_path, env, "add_repository", str(tmp_path))
    assert refused.returncode == 1
    assert f"GASTOWN_REPOSITORY_ROOTS is {src.resolve()}" in refused.stderr, refused.stderr
    assert f"GASTOWN_REPOSITORY_ROOTS={src.resolve()},{tmp_path.resolve()}" in refused.stderr

    added = manage(tmp_path, env, "add_repository", "src/My_App", "--gate", "test -f app.py")
    assert added.returncode == 0, added.stderr
    assert "Traceback" not in added.stderr, added.stderr  # no server running: nothing to tell
    assert "Registered repository 'my-app'" in added.stdout, added.stdout
    repository_id = int(added.stdout.split("(id ")[1].split(")")[0])

    agent = manage(tmp_path, env, "create_agent", "bot")
    assert agent.returncode == 0, agent.stderr
    token = agent.stdout.strip()

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "run.log"
    server = launcher_start(env, port, log_path)
    try:
        wait_healthy(base, server, log_path)

        repository = api(base, token, "GET", f"/api/v1/repositories/{repository_id}/")
        assert repository["path"] == str((src / "My_App").resolve())
        assert repository["gate_command"] == "test -f app.py"
        rig = api(base, token, "POST", "/api/v1/rigs/", {"repository": repository_id, "slug": "a"})
        deadline = time.monotonic() + 90
        while rig["state"] not in ("ready", "failed") and time.monotonic() < deadline:
            time.sleep(0.3)
            rig = api(base, token, "GET", f"/api/v1/rigs/{rig['id']}/")
        assert rig["state"] == "ready", (rig, log_path.read_text()[-3000:])
        worktree = Path(rig["worktree_path"])
        assert worktree.is_relative_to(data_dir.resolve() / "worktrees")
        assert (worktree / "app.py").read_text() == "print('hello')\n"
        assert git(worktree, "rev-parse", "--abbrev-ref", "HEAD") == "rig/a"
    finally:
        stop_process_group(server, timeout=60)


# --- the command and the API, in this process ---------------------------------------------------


@pytest.mark.django_db
def test_add_repository_command_takes_a_relative_path_a_name_and_commands(
    git_repo, monkeypatch, capsys
):
    monkeypatch.chdir(git_repo.parent)
    call_command(
        "add_repository", git_repo.name, "--name", "web", "--gate", "make test", "--setup", "make"
    )
    repository = Repository.objects.get(name="web")
    assert repository.path == str(git_repo.resolve()) and repository.target_branch == "main"
    assert (repository.gate_command, repository.setup_command) == ("make test", "make")
    assert f"(id {repository.id})" in capsys.readouterr().out


@pytest.mark.django_db
def test_add_repository_command_names_the_rule_it_broke(git_repo, repo_root):
    with pytest.raises(CommandError, match="target_branch: branch 'trunk' does not exist"):
        call_command("add_repository", str(git_repo), "--target", "trunk")
    with pytest.raises(CommandError) as refused:
        call_command("add_repository", "/etc")
    message = str(refused.value)
    assert message.startswith("path: '/etc' resolves to /etc, outside the repository roots")
    assert f"GASTOWN_REPOSITORY_ROOTS is {repo_root.resolve()}" in message
    assert "comma-separated" in message and "restart the server" in message
    assert not Repository.objects.exists()


@pytest.mark.django_db
def test_the_api_names_the_setting_when_a_path_is_outside_the_roots(
    django_user_model, repo_root, tmp_path
):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    client = APIClient()
    client.force_login(django_user_model.objects.create_superuser("root", password="pw-12345678"))
    response = client.post(
        "/api/v1/repositories/", {"name": "x", "path": str(outside)}, format="json"
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"] == "path"
    assert f"GASTOWN_REPOSITORY_ROOTS is {repo_root.resolve()}" in error["message"]
    assert f"GASTOWN_REPOSITORY_ROOTS={repo_root.resolve()},{outside.resolve()}" in error["message"]
