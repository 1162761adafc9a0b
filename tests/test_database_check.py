"""`manage.py` against a data dir with no database (issue 17, part 4): one line that says what
to do instead of a "no such table" traceback, and no data dir (no stray ./var) made by a command
that is not `migrate`. Real `manage.py` processes, in a temporary working directory."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from tests.conftest import BASE_DIR

HINT = "run `make run` or `manage.py migrate`, or set GASTOWN_DATA_DIR"


def clean_env(**env: str) -> dict[str, str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GASTOWN_", "DJANGO_"))
        and k not in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DEBUG")
    }
    return {**base, **env}


def manage(cwd: Path, env: dict[str, str], *args: str, script: Path | None = None):
    return subprocess.run(
        [sys.executable, str(script or BASE_DIR / "manage.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("made", [True, False], ids=["empty-data-dir", "no-data-dir"])
def test_a_command_on_a_data_dir_with_no_database_says_so(tmp_path, made):
    data_dir = tmp_path / "data"
    if made:
        data_dir.mkdir()
    result = manage(tmp_path, clean_env(GASTOWN_DATA_DIR=str(data_dir)), "create_agent", "bot")
    assert result.returncode == 1
    assert result.stderr.strip() == f"no Gas Town database at {data_dir.resolve()}; {HINT}"
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not (data_dir / "gastown.sqlite3").exists()  # not created by looking for it
    assert data_dir.exists() == made  # a missing data dir is not made
    assert not (tmp_path / "var").exists()


def test_commands_that_need_no_database_still_run_and_migrate_makes_the_data_dir(tmp_path):
    data_dir = tmp_path / "deep" / "data"
    env = clean_env(GASTOWN_DATA_DIR=str(data_dir))
    for args in (["help"], ["add_repository", "--help"], ["check"]):
        result = manage(tmp_path, env, *args)
        assert result.returncode == 0, (args, result.stderr)
    assert "GASTOWN_REPOSITORY_ROOTS" in manage(tmp_path, env, "add_repository", "-h").stdout
    assert not data_dir.exists()

    migrated = manage(tmp_path, env, "migrate", "--noinput", "-v0")
    assert migrated.returncode == 0, migrated.stderr
    assert (data_dir / "gastown.sqlite3").is_file()
    created = manage(tmp_path, env, "create_agent", "bot")
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip().startswith("gt_")


def test_the_default_data_dir_is_not_made_by_a_command(tmp_path):
    """GASTOWN_DATA_DIR unset: the default is `var/` beside manage.py. A copy of the project's
    settings package (everything else linked) gives it a default of its own that does not
    exist yet; a command run from elsewhere then leaves no `var/` anywhere."""
    project = tmp_path / "project"
    project.mkdir()
    for entry in BASE_DIR.iterdir():
        if entry.name in ("var", ".venv", ".git") or entry.name.startswith("."):
            continue
        if entry.name == "gastown_site":
            shutil.copytree(
                entry, project / entry.name, ignore=shutil.ignore_patterns("__pycache__")
            )
        elif entry.name == "manage.py":
            shutil.copy(entry, project / entry.name)
        else:
            (project / entry.name).symlink_to(entry)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    script = project / "manage.py"
    result = manage(cwd, clean_env(), "create_agent", "bot", script=script)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == f"no Gas Town database at {project / 'var'}; {HINT}"
    assert not (project / "var").exists() and not (cwd / "var").exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL runs only (CI)")
def test_postgres_without_the_tables_says_so(tmp_path):
    """A PostgreSQL database Gas Town never migrated (the server's maintenance database)."""
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host = db["HOST"] or "localhost"
    url = f"postgres://{db['USER']}{password}@{host}:{db['PORT'] or 5432}/postgres"
    env = clean_env(
        DATABASE_URL=url, SECRET_KEY="k" + os.urandom(16).hex(), GASTOWN_DATA_DIR=str(tmp_path)
    )
    result = manage(tmp_path, env, "create_agent", "bot")
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == (
        f"no Gas Town tables in the database at {host}/postgres (DATABASE_URL); "
        "run `make run` or `manage.py migrate`"
    )
