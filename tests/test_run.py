"""`make run`'s launcher (gastown_site/run.py): once the web answers and the worker is up, it
prints the addresses and the admin login in a block of their own, after the start-up logs."""

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from gastown_site import run as run_module
from rigs.services import admin_login_ensure
from tests.conftest import BASE_DIR, free_port, launcher_start, stop_process_group


def fresh_env(data_dir: Path) -> dict[str, str]:
    """A launcher on its own embedded default: nothing of this test run's database or broker."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GASTOWN_", "DJANGO_"))
        and k not in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DEBUG")
    }
    env.update(GASTOWN_DATA_DIR=str(data_dir), GASTOWN_WORKER_CONCURRENCY="1", PYTHONUNBUFFERED="1")
    return env


def test_make_run_prints_the_addresses_and_the_admin_login_once_ready(tmp_path):
    data_dir = tmp_path / "var"
    env = fresh_env(data_dir)
    migrated = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert migrated.returncode == 0, migrated.stderr
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "run.log"
    server = launcher_start(env, port, log_path)
    try:
        deadline = time.monotonic() + 150
        while "Gas Town is ready" not in log_path.read_text():
            assert server.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
            assert response.status == 200
        lines = log_path.read_text().splitlines()
    finally:
        stop_process_group(server, timeout=60)

    start = lines.index("  Gas Town is ready")
    block = lines[start - 1 : start + 7]
    assert block[0] == block[-1] == "=" * 78
    assert block[2:5] == [
        f"  board     {url}/",
        f"  admin     {url}/admin/",
        f"  API docs  {url}/api/docs/",
    ]
    assert block[5].startswith("  login     admin / ") and "shown only this once" in block[5]
    assert block[6] == f"  data dir  {data_dir}   (Ctrl-C stops everything)"
    # after the worker's start-up logs, not among them
    worker_ready = next(i for i, line in enumerate(lines) if "ready." in line and "celery@" in line)
    assert worker_ready < start
    password = block[5].removeprefix("  login     admin / ").split()[0]
    check = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            "from django.contrib.auth.models import User; "
            f"print('password', User.objects.get(username='admin').check_password('{password}'))",
        ],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert "password True" in check.stdout, (check.stdout, check.stderr)


def test_ready_block_says_how_to_log_in():
    made = run_module.ready_block("http://h:1", login=("admin", "s3cret"), data_dir="/d")
    assert "  login     admin / s3cret   (made now, shown only this once" in made
    again = run_module.ready_block("http://h:1", login=("root", None), data_dir="/d")
    assert "s3cret" not in again and "python manage.py changepassword root" in again
    unknown = run_module.ready_block("http://h:1", login=None, data_dir="/d")
    assert "manage.py ensure_admin" in unknown


@pytest.mark.django_db
def test_the_admin_login_is_made_once():
    name, password = admin_login_ensure()
    assert name == "admin" and password
    assert get_user_model().objects.get(username="admin").check_password(password)
    assert admin_login_ensure() == ("admin", None)  # never shown again
    assert get_user_model().objects.filter(is_superuser=True).count() == 1


def test_wait_ready_gives_up_when_a_part_exits_or_on_ctrl_c():
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    url = f"http://127.0.0.1:{free_port()}"
    assert not run_module.wait_ready(url, [("worker", done)], lambda: False, timeout=30)
    assert not run_module.wait_ready(url, [], lambda: True, timeout=30)
