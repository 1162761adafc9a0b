"""The database half of a backup: an online-consistent copy and its restore.

- SQLite: the sqlite3 backup API copies the database in one step, inside one read transaction,
  so the copy is a consistent snapshot while the server and workers keep writing (WAL).
- PostgreSQL: `pg_dump --format=custom` (one snapshot, by its own transaction); restored with
  `pg_restore` into an empty database. Both come with PostgreSQL's client package
  (`make postgres-client`).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

from django.db import connections
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder

from backups.manifest import BackupError
from common import process

SQLITE_FILE = "database.sqlite3"
POSTGRES_FILE = "database.pgdump"
PG_TIMEOUT_SECONDS = 3600.0
PG_CLIENT_HINT = (
    "install PostgreSQL's client tools (`make postgres-client`, or "
    "`apt-get install postgresql-client`; the client must be as new as the server)"
)


def vendor() -> str:
    return connections["default"].vendor


def sqlite_path() -> Path:
    return Path(connections["default"].settings_dict["NAME"])


def _pg_environment() -> dict[str, str]:
    """pg_dump's and pg_restore's whole environment: where the database is and who to be
    (the password in PGPASSWORD, never on a command line that `ps` shows)."""
    db = connections["default"].settings_dict
    env = {"PATH": os.environ.get("PATH", process.DEFAULT_PATH), "LC_ALL": "C.UTF-8"}
    values = {
        "PGHOST": db.get("HOST"),
        "PGPORT": db.get("PORT"),
        "PGUSER": db.get("USER"),
        "PGPASSWORD": db.get("PASSWORD"),
        "PGDATABASE": db.get("NAME"),
        "PGSSLMODE": (db.get("OPTIONS") or {}).get("sslmode"),
    }
    env.update({name: str(value) for name, value in values.items() if value})
    return env


def _pg_program(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} is not installed, and PostgreSQL needs it: {PG_CLIENT_HINT}")
    return found


def _pg_run(argv: list[str]) -> None:
    result = process.program_run(argv, env=_pg_environment(), timeout=PG_TIMEOUT_SECONDS)
    if not result.ok:
        why = "timed out" if result.timed_out else f"exited with {result.exit_code}"
        tail = process.secrets_scrub(result.output.strip()[-2000:])
        raise BackupError(f"{Path(argv[0]).name} {why}: {tail}")


def server_version() -> str:
    """The database's own version, for the manifest (`sqlite 3.40.1`, `PostgreSQL 15.3`)."""
    if vendor() == "sqlite":
        return f"sqlite {sqlite3.sqlite_version}"
    with connections["default"].cursor() as cursor:
        cursor.execute("SHOW server_version")
        return f"PostgreSQL {cursor.fetchone()[0]}"


def database_dump(directory: Path) -> Path:
    """Copy the database into `directory`; returns the file written."""
    if vendor() == "sqlite":
        target = directory / SQLITE_FILE
        _sqlite_copy(sqlite_path(), target)
        return target
    if vendor() != "postgresql":
        raise BackupError(f"cannot back up a {vendor()} database (SQLite or PostgreSQL only)")
    target = directory / POSTGRES_FILE
    _pg_run([_pg_program("pg_dump"), "--format=custom", "--no-password", f"--file={target}"])
    return target


def _sqlite_copy(source: Path, target: Path) -> None:
    """Copy with the backup API: one step (pages=-1), so one read transaction and one
    snapshot. The copy leaves WAL mode, so it is one self-contained file."""
    src = sqlite3.connect(source, timeout=30)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst, pages=-1)
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    finally:
        src.close()


def database_occupied() -> str | None:
    """Why the database settings point at is not empty (a restore refuses then), or None.
    SQLite: the file exists (it is not opened: opening would create it)."""
    if vendor() == "sqlite":
        path = sqlite_path()
        return f"the SQLite database {path} exists" if path.exists() else None
    connection = connections["default"]
    try:
        tables = connection.introspection.table_names()
    finally:
        connection.close()
    if tables:
        db = connection.settings_dict
        where = f"{db.get('HOST') or 'localhost'}/{db.get('NAME')}"
        return f"the PostgreSQL database {where} has {len(tables)} tables"
    return None


def database_restore(source: Path) -> str:
    """Load a dump made by `database_dump` into the (empty) database settings point at.
    Returns where it went."""
    connections.close_all()
    if vendor() == "sqlite":
        target = sqlite_path()
        target.parent.mkdir(parents=True, exist_ok=True)
        check = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
        try:
            verdict = check.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            check.close()
        if verdict != "ok":
            raise BackupError(f"{source} is damaged (SQLite quick_check: {verdict})")
        _sqlite_copy(source, target)
        target.chmod(0o600)
        return str(target)
    argv = [
        _pg_program("pg_restore"),
        "--no-owner",
        "--no-privileges",
        "--exit-on-error",
        "--single-transaction",
        "--no-password",
        f"--dbname={connections['default'].settings_dict['NAME']}",
        str(source),
    ]
    _pg_run(argv)
    db = connections["default"].settings_dict
    return f"{db.get('HOST') or 'localhost'}/{db.get('NAME')}"


def migrations_applied() -> list[str]:
    """`app.migration` of every migration applied to the database, sorted."""
    applied = MigrationRecorder(connections["default"]).applied_migrations()
    return sorted(f"{app}.{name}" for app, name in applied)


def migrations_known() -> set[str]:
    """`app.migration` of every migration this code has (read from disk, no database)."""
    loader = MigrationLoader(None, ignore_no_migrations=True)
    return {f"{app}.{name}" for app, name in loader.disk_migrations}
