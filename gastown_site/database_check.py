"""`manage.py` on a data dir with no database: one line that says what to do, instead of a
"no such table" traceback (and, with settings, no empty ./var left behind).

SQLite: the database file must exist (it is not opened otherwise: opening would create it) and
hold Django's migration table. PostgreSQL: the migration table must exist (one query).
"""

from pathlib import Path

# Commands that need no Gas Town database: `migrate` makes it, `restore` puts one back (onto
# an empty data dir); the others only read code or settings. `--help` on any command needs none.
NO_DATABASE_COMMANDS = frozenset(
    {
        "migrate",
        "restore",
        "makemigrations",
        "check",
        "help",
        "version",
        "diffsettings",
        "collectstatic",
        "findstatic",
        "startapp",
        "startproject",
        "makemessages",
        "compilemessages",
    }
)
MIGRATIONS_TABLE = "django_migrations"


def needs_database(argv: list[str]) -> bool:
    """Whether `manage.py <argv[1:]>` runs a command that reads or writes the database."""
    if len(argv) < 2 or argv[1].startswith("-"):
        return False  # `manage.py`, `manage.py --help`, `--version`: Django's own help
    return argv[1] not in NO_DATABASE_COMMANDS and not {"-h", "--help"} & set(argv[2:])


def database_missing() -> str | None:
    """The message to stop with when there is no Gas Town database where settings point, else
    None. Sets Django up first (DJANGO_SETTINGS_MODULE), as the command would."""
    import django
    from django.conf import settings
    from django.db import connections

    django.setup()

    db = settings.DATABASES["default"]
    run = "run `make run` or `manage.py migrate`"
    if db["ENGINE"] == "django.db.backends.sqlite3":
        name = Path(db["NAME"])
        # the data dir, unless the database was put elsewhere (GASTOWN_SQLITE_PATH)
        where = settings.DATA_DIR if name.parent == Path(settings.DATA_DIR) else name
        message = f"no Gas Town database at {where}; {run}, or set GASTOWN_DATA_DIR"
        if not name.is_file():
            return message
    else:
        where = f"{db.get('HOST') or 'localhost'}/{db.get('NAME')} (DATABASE_URL)"
        message = f"no Gas Town tables in the database at {where}; {run}"
    connection = connections["default"]
    try:
        tables = connection.introspection.table_names()
    finally:
        connection.close()
    return None if MIGRATIONS_TABLE in tables else message
