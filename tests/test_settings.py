"""Settings selection, checked in fresh interpreters with controlled environments."""

import json
import os
import subprocess
import sys
from pathlib import Path

BASE = Path(__file__).resolve().parent.parent
PROBE = """
import json, django
from django.conf import settings
django.setup()
from django.db import connection
out = {
    "engine": settings.DATABASES["default"]["ENGINE"],
    "broker": settings.CELERY_BROKER_URL,
    "channel_host": settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0],
    "data_dir": str(settings.DATA_DIR),
    "debug": settings.DEBUG,
}
if "sqlite" in out["engine"]:
    with connection.cursor() as c:
        c.execute("PRAGMA journal_mode")
        out["journal_mode"] = c.fetchone()[0]
print(json.dumps(out))
"""


def probe(tmp_path, **env):
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DEBUG", "GASTOWN_DATA_DIR")
    }
    clean.update({"DJANGO_SETTINGS_MODULE": "gastown_site.settings", **env})
    return subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=BASE,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_embedded_default(tmp_path):
    result = probe(tmp_path, GASTOWN_DATA_DIR=str(tmp_path / "data"))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["engine"] == "django.db.backends.sqlite3"
    assert out["journal_mode"] == "wal"
    assert out["data_dir"] == str((tmp_path / "data").resolve())
    sock = str((tmp_path / "data" / "redis.sock").resolve())
    assert out["broker"] == f"redis+socket://{sock}"
    assert out["channel_host"] == {"address": f"unix://{sock}"}
    # A per-installation key was generated, private to the owner.
    key = tmp_path / "data" / "secret_key"
    assert key.exists() and oct(key.stat().st_mode)[-3:] == "600"


def test_postgres_and_redis_from_environment(tmp_path):
    result = probe(
        tmp_path,
        GASTOWN_DATA_DIR=str(tmp_path / "data"),
        DATABASE_URL="postgres://u:p@db.example:5432/gastown",
        REDIS_URL="redis://cache.example:6379/2",
        SECRET_KEY="a-real-production-secret-key-0123456789",
    )
    # django.setup() does not connect, so this works without those servers.
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["engine"] == "django.db.backends.postgresql"
    assert out["broker"] == "redis://cache.example:6379/2"
    assert out["channel_host"] == "redis://cache.example:6379/2"


def test_production_refuses_the_development_key(tmp_path):
    result = probe(
        tmp_path,
        GASTOWN_DATA_DIR=str(tmp_path / "data"),
        DATABASE_URL="postgres://u:p@db.example:5432/gastown",
        SECRET_KEY="django-insecure-gastown-development-key",
    )
    assert result.returncode != 0
    assert "development SECRET_KEY" in result.stderr


def test_production_requires_a_key(tmp_path):
    result = probe(
        tmp_path,
        GASTOWN_DATA_DIR=str(tmp_path / "data"),
        DATABASE_URL="postgres://u:p@db.example:5432/gastown",
    )
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_debug_allows_the_development_key(tmp_path):
    result = probe(tmp_path, GASTOWN_DATA_DIR=str(tmp_path / "data"), DEBUG="1")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["debug"] is True


def test_logs_and_metrics_settings_refuse_what_they_cannot_use(tmp_path):
    data = str(tmp_path / "data")
    result = probe(tmp_path, GASTOWN_DATA_DIR=data, LOG_FORMAT="xml")
    assert result.returncode != 0
    assert "LOG_FORMAT must be text or json" in result.stderr
    result = probe(tmp_path, GASTOWN_DATA_DIR=data, GASTOWN_METRICS_TOKEN="short")
    assert result.returncode != 0
    assert "GASTOWN_METRICS_TOKEN must be at least 20 characters" in result.stderr


MULTIPROC_PROBE = """
import json, os, django
django.setup()
print(json.dumps(os.environ.get("PROMETHEUS_MULTIPROC_DIR")))
"""


def multiproc_dir(tmp_path, **env) -> str | None:
    # the embedded default (a PostgreSQL run's DATABASE_URL would ask for a SECRET_KEY)
    dropped = ("GASTOWN_DATA_DIR", "SECRET_KEY", "DATABASE_URL", "REDIS_URL")
    clean = {k: v for k, v in os.environ.items() if k not in dropped}
    clean.update(
        {"DJANGO_SETTINGS_MODULE": "gastown_site.settings", "GASTOWN_DATA_DIR": str(tmp_path)}
    )
    result = subprocess.run(
        [sys.executable, "-c", MULTIPROC_PROBE],
        cwd=BASE,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_metrics_dir_is_private_and_handed_to_prometheus_client(tmp_path):
    assert multiproc_dir(tmp_path) == str(tmp_path.resolve() / "metrics")
    assert oct((tmp_path / "metrics").stat().st_mode)[-3:] == "700"
    assert (
        multiproc_dir(tmp_path, GASTOWN_METRICS_DIR="none", PROMETHEUS_MULTIPROC_DIR="/x") is None
    )
