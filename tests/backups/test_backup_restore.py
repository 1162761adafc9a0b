"""`manage.py backup` and `manage.py restore` end to end: an installation with real repositories
is backed up mid-convoy (a rig with commits, a merged merge request, an archive ref), restored
into a fresh data dir by `manage.py restore` in a process of its own, and started there as `make
run` starts it. Runs on the suite's database: SQLite, or PostgreSQL when DATABASE_URL is set
(then pg_dump and pg_restore must be installed: `make postgres-client`)."""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection

from audit.checks import audit_run
from backups import services as backup_services
from backups.manifest import file_sha256
from common.process import host_name
from convoys import services as convoy_services
from convoys.models import Leg
from events.models import Event
from rigs import git, operations, services
from rigs.models import MergeRequest, Rig
from runner.models import AgentRun
from tests import factories
from tests.conftest import BASE_DIR, free_port, stop_process_group, wait_healthy
from tests.rigs.helpers import commit_file, register, rig_land, rig_ready, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

POSTGRES = connection.vendor == "postgresql"
if POSTGRES and not (shutil.which("pg_dump") and shutil.which("pg_restore")):
    pytestmark = [
        pytestmark,
        pytest.mark.skip(reason="pg_dump/pg_restore missing: make postgres-client"),
    ]

# Fields a restore rewrites on purpose (where things live now), compared on their own.
RELOCATED = {
    "rigs.repository": ("path",),
    "rigs.rig": ("worktree_path",),
    "runner.agentrun": ("log_path", "host"),
}


# --- helpers ---------------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_database():
    """DATABASE_URL of a new empty PostgreSQL database (dropped afterwards), or None on SQLite
    (the restored installation's database is then a file in its data dir)."""
    if not POSTGRES:
        yield None
        return
    db = connection.settings_dict
    name = f"gastown_restore_{uuid.uuid4().hex[:10]}"
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host = f"{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}"
    try:
        yield f"postgres://{db['USER']}{password}@{host}/{name}"
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def installation_env(data_dir: Path, database_url: str | None, **extra: str) -> dict[str, str]:
    """The environment of a Gas Town process of the restored installation: its own data dir,
    database, queue and channel prefix, nothing of this test run's."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("GASTOWN_", "DJANGO_"))
        and name not in ("DATABASE_URL", "SECRET_KEY", "PYTEST_CURRENT_TEST")
    }
    tag = uuid.uuid4().hex[:8]
    env.update(
        {
            "GASTOWN_DATA_DIR": str(data_dir),
            "GASTOWN_QUEUE": f"gastown-restored-{tag}",
            "GASTOWN_CHANNEL_PREFIX": f"asgi-restored-{tag}",
            "GASTOWN_SSL_REDIRECT": "0",
            "GASTOWN_SECURE_COOKIES": "0",
            "GASTOWN_HSTS_SECONDS": "0",
            "GASTOWN_DEMO": "0",
            "PYTHONUNBUFFERED": "1",
            **extra,
        }
    )
    if database_url:
        env["DATABASE_URL"] = database_url
        env["SECRET_KEY"] = "restored-" + uuid.uuid4().hex
    return env


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, (result.args, result.stdout, result.stderr[-3000:])
    return result.stdout


def rows(dump: list[dict]) -> tuple[list[dict], dict[tuple[str, int], dict]]:
    """A `dumpdata` without the restore's own event, and the relocated fields apart."""
    kept, relocated = [], {}
    for row in dump:
        if row["model"] == "events.event" and row["fields"]["kind"] == "installation.restored":
            continue
        fields = dict(row["fields"])
        moved = {name: fields.pop(name) for name in RELOCATED.get(row["model"], ())}
        if moved:
            relocated[(row["model"], row["pk"])] = moved
        kept.append({**row, "fields": fields})
    return kept, relocated


def source_dump() -> list[dict]:
    out = io.StringIO()
    call_command("dumpdata", "--indent=0", stdout=out)
    return json.loads(out.getvalue())


def api(base: str, token: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{base}/api/v1/{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
        method="POST" if body is not None else "GET",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture
def inner_root():
    """A repository root inside the data dir (where the demo's repository lives)."""
    root = Path(settings.DATA_DIR) / f"repositories-{uuid.uuid4().hex[:8]}"
    root.mkdir()
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def installation(git_repo, repo_root, inner_root, settings):
    """A running convoy: `app` (a checkout registered from outside the data dir) with the `api`
    leg landed (a merged merge request), the `ui` leg at work (a commit not landed), a rig torn
    down with its work under refs/gastown/archive/; `tools` (a bare repository inside the data
    dir); an agent run's log."""
    settings.GASTOWN_REPOSITORY_ROOTS = [repo_root.resolve(), inner_root.resolve()]
    tools_path = inner_root / "tools.git"
    git.init_repository(tools_path, bare=True)
    tip = git.commit_files(tools_path, {"tool.sh": "echo hi\n"}, "tools")
    git.update_ref(tools_path, "refs/heads/main", tip, git.ZERO_OID)
    services.repository_register(name="tools", path=str(tools_path), target_branch="main")

    app = register(git_repo)
    agent, token = services.agent_create(name="agent-1")
    api_rig, ui_rig = rig_ready(app, "api", agent), rig_ready(app, "ui", agent)
    convoy = convoy_services.convoy_create(
        title="Build the authentication system",
        repository=app,
        target_branch="main",
        legs=[
            {"key": "api", "title": "API", "rig": api_rig},
            {"key": "ui", "title": "UI", "rig": ui_rig, "depends_on": ["api"]},
        ],
    )
    convoy_services.convoy_launch(convoy=convoy)
    convoy_services.bead_create(title="Write the login page", rig=ui_rig, priority=1)

    commit_file(Path(api_rig.worktree_path), "auth/api.py", "def login(): ...\n", "api")
    operations.rig_sync_run(api_rig.id)
    rig_land(api_rig)
    commit_file(Path(ui_rig.worktree_path), "ui/login.js", "login()\n", "ui: login page")
    operations.rig_sync_run(ui_rig.id)

    old = rig_ready(app, "old")
    commit_file(Path(old.worktree_path), "old.txt", "unmerged\n", "old work")
    assert "saved at refs/gastown/archive/old/" in operations.rig_teardown_run(old.id, force=True)

    log_dir = Path(settings.GASTOWN_RUN_LOG_DIR)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_name = f"run-{uuid.uuid4().hex[:6]}.log"
    (log_dir / log_name).write_text("agent output\n")
    assert Leg.objects.get(key="api").state == Leg.State.LANDED
    assert Leg.objects.get(key="ui").state != Leg.State.LANDED  # mid-convoy
    return {"app": app, "token": token, "log": log_name, "git_repo": git_repo}


# --- the whole round trip ----------------------------------------------------------------------


def test_backup_mid_convoy_restores_into_a_fresh_data_dir_that_starts(installation, tmp_path):
    app = installation["app"]
    source_audit = audit_run()
    assert source_audit.clean, source_audit.text()
    dest = tmp_path / "backup"
    out = io.StringIO()
    call_command("backup", str(dest), stdout=out)
    text = out.getvalue()
    assert "repository app: 4 refs: 3 branches, 1 archive ref" in text, text
    assert "Backup complete: " in text and str(dest / "manifest.json") in text

    manifest = json.loads((dest / "manifest.json").read_text())
    for entry in manifest["files"]:
        path = dest / entry["path"]
        assert (path.stat().st_size, file_sha256(path)) == (entry["size"], entry["sha256"])
    assert {e["path"] for e in manifest["files"]} >= {
        "database.pgdump" if POSTGRES else "database.sqlite3",
        f"runs/{installation['log']}",
    }
    assert set(manifest["versions"]) == {"gastown", "python", "django", "git", "database"}
    backed = {r["name"]: r for r in manifest["repositories"]}
    repo = installation["git_repo"]
    assert backed["app"]["refs"] == git.refs_all(repo)
    assert backed["app"]["data_dir_path"] is None and not backed["app"]["bare"]
    assert backed["tools"]["data_dir_path"].endswith("/tools.git") and backed["tools"]["bare"]
    archive = [ref for ref in backed["app"]["refs"] if ref.startswith("refs/gastown/archive/")]
    assert len(archive) == 1
    before, before_moved = rows(source_dump())
    rigs = {rig.pk: rig for rig in Rig.objects.all()}
    ui = next(rig for rig in rigs.values() if rig.slug == "ui")
    merged = MergeRequest.objects.get(state=MergeRequest.State.MERGED)

    with fresh_database() as database_url:
        target = tmp_path / "restored"  # not there yet: restore makes it
        # the roots as the source had them: <data dir>/repositories and the one inside it
        inner = Path(backed["tools"]["data_dir_path"]).parent
        roots = f"{target / 'repositories'},{target / inner}"
        env = installation_env(target, database_url, GASTOWN_REPOSITORY_ROOTS=roots)
        restored = ok(manage(env, "restore", str(dest)))
        assert "rig worktrees: 2 checked out again" in restored, restored  # api (landed), ui
        assert f"repository app: 4 refs checked, at {target}/repositories/app" in restored

        # the database rows match, but for where things live now
        after, after_moved = rows(json.loads(ok(manage(env, "dumpdata", "--indent=0"))))
        assert after == before
        app_path = after_moved[("rigs.repository", app.id)]["path"]
        assert app_path == str(target / "repositories" / "app")
        tools = backed["tools"]
        tools_path = after_moved[("rigs.repository", tools["id"])]["path"]
        assert tools_path == str(target / tools["data_dir_path"])
        for (model, pk), moved in after_moved.items():
            if model == "rigs.rig":
                slug = rigs[pk].slug
                assert moved["worktree_path"] == str(target / "worktrees" / "app" / slug)
        assert set(after_moved) == set(before_moved)

        # every rig head, the target branch and the archive ref are in the restored repository
        restored_app = target / "repositories" / "app"
        for rig in rigs.values():
            if rig.head_commit:
                assert git.object_exists(restored_app, rig.head_commit), rig.slug
        assert git.object_exists(restored_app, merged.merge_commit)
        assert git.refs_all(restored_app) == backed["app"]["refs"]
        assert git.resolve_branch(restored_app, "main") == git.resolve_branch(repo, "main")
        assert (restored_app / "auth" / "api.py").is_file()  # a checkout gets main's files
        ui_worktree = target / "worktrees" / "app" / "ui"
        assert git.rev_parse(ui_worktree, "HEAD") == ui.head_commit
        assert (ui_worktree / "ui" / "login.js").read_text() == "login()\n"
        assert (target / "runs" / installation["log"]).read_text() == "agent output\n"

        # the restored installation starts: checks, reconciles, serves, provisions a new rig
        ok(manage(env, "check"))
        assert "No drift." in ok(manage(env, "reconcile"))
        assert "Audit clean" in ok(manage(env, "audit"))  # every invariant holds (audit/)
        started_rig = start_and_provision(env, target, installation["token"], app.id)
        assert Path(started_rig["worktree_path"]).is_dir()

        # the same backup again, every repository under --repositories-root
        with fresh_database() as second_url:
            other = tmp_path / "restored-2"
            elsewhere = tmp_path / "git-elsewhere"
            outside = manage(
                installation_env(other, second_url),
                "restore",
                str(dest),
                "--repositories-root",
                str(elsewhere),
            )
            assert outside.returncode == 1 and "GASTOWN_REPOSITORY_ROOTS" in outside.stderr
            assert not other.exists() or not any(other.iterdir())
            env2 = installation_env(other, second_url, GASTOWN_REPOSITORY_ROOTS=str(elsewhere))
            ok(manage(env2, "restore", str(dest), "--repositories-root", str(elsewhere)))
            assert git.refs_all(elsewhere / "app") == backed["app"]["refs"]
            assert git.is_bare(elsewhere / "tools.git")


def start_and_provision(env: dict[str, str], data_dir: Path, token: str, repository: int) -> dict:
    """Start the restored installation as `make run` does, and ask it for a rig as the agent
    (its token came back with the database)."""
    port = free_port()
    log_path = data_dir.parent / f"restored-run-{port}.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "gastown_site.run", "--no-demo", "--port", str(port)],
            cwd=BASE_DIR,
            env={**env, "GASTOWN_WORKER_CONCURRENCY": "2"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, server, log_path, seconds=120)
        assert api(base, token, "me/")["agent"]["name"] == "agent-1"
        rig = api(base, token, "rigs/", {"repository": repository, "slug": "after-restore"})

        def ready():
            current = api(base, token, f"rigs/{rig['id']}/")
            return current if current["state"] in ("ready", "failed") else None

        rig = wait_for(ready, timeout=120, interval=0.3, message="the new rig to be provisioned")
        assert rig["state"] == "ready", (rig, log_path.read_text()[-3000:])
        assert rig["worktree_path"].startswith(str(data_dir / "worktrees"))
        return rig
    finally:
        stop_process_group(server)
        time.sleep(0.2)


# --- refusals ------------------------------------------------------------------------------------


@pytest.fixture
def small_backup(git_repo, tmp_path) -> Path:
    register(git_repo)
    dest = tmp_path / "small"
    call_command("backup", str(dest), stdout=io.StringIO())
    return dest


def restore(*args: str) -> str:
    out = io.StringIO()
    call_command("restore", *args, stdout=out)
    return out.getvalue()


def test_backup_goes_only_into_a_new_or_empty_folder(tmp_path, db):
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    with pytest.raises(CommandError, match="exists and is not empty"):
        call_command("backup", str(used), stdout=io.StringIO())
    assert [p.name for p in used.iterdir()] == ["keep.txt"]


def test_restore_refuses_a_data_dir_that_is_not_empty(small_backup):
    # this test run's data dir holds its database and more
    with pytest.raises(CommandError, match=r"the data dir .* is not empty \(.*\): a restore"):
        restore(str(small_backup))


def test_restore_checks_the_manifest_before_anything_else(small_backup):
    bundle = next((small_backup / "repositories").iterdir())
    bundle.write_bytes(bundle.read_bytes()[:-1] + b"x")
    with pytest.raises(CommandError, match=r"does not match its manifest.*sha256"):
        restore(str(small_backup))
    bundle.unlink()
    with pytest.raises(CommandError, match=rf"repositories/{bundle.name}: missing"):
        restore(str(small_backup))
    (small_backup / "manifest.json").unlink()
    with pytest.raises(CommandError, match=r"holds no manifest\.json"):
        restore(str(small_backup))


def test_restore_refuses_a_manifest_that_points_outside_the_backup(small_backup):
    manifest = json.loads((small_backup / "manifest.json").read_text())
    manifest["files"][0]["path"] = "../../etc/passwd"
    (small_backup / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CommandError, match="outside the backup"):
        restore(str(small_backup))


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (lambda m: m.pop("repositories"), "repositories is missing"),
        (lambda m: m["files"][0].update(size="12"), r"files\[0\]\.size has the wrong type"),
        (lambda m: m["repositories"][0].pop("refs"), r"repositories\[0\]\.refs is missing"),
        (lambda m: m.update(database=[]), "database is not an object"),
    ],
)
def test_restore_refuses_a_malformed_manifest_naming_what_is_wrong(small_backup, change, said):
    path = small_backup / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))
    with pytest.raises(CommandError, match=f"is malformed: {said}"):
        restore(str(small_backup))


def test_restore_refuses_a_backup_of_a_newer_gastown_or_another_database(small_backup):
    path = small_backup / "manifest.json"
    manifest = json.loads(path.read_text())
    newer = {**manifest["database"], "migrations": ["rigs.9999_from_the_future"]}
    path.write_text(json.dumps({**manifest, "database": newer}))
    with pytest.raises(CommandError, match=r"newer Gas Town.*rigs\.9999_from_the_future"):
        restore(str(small_backup))
    other = "sqlite" if POSTGRES else "postgresql"
    path.write_text(json.dumps({**manifest, "database": {**manifest["database"], "vendor": other}}))
    with pytest.raises(CommandError, match=f"holds a {other} database"):
        restore(str(small_backup))


def test_relocate_points_the_rows_at_the_new_places_and_adopts_live_runs(db, settings, tmp_path):
    repository = factories.repository(name="app", path="/old/data/repositories/app")
    rig = factories.rig(repository=repository, slug="api", worktree_path="/old/data/x/api")
    settings.GASTOWN_WORKTREE_ROOT = tmp_path / "worktrees"
    settings.GASTOWN_RUN_LOG_DIR = tmp_path / "runs"
    running = AgentRun.objects.create(
        rig=rig,
        agent=rig.agent,
        command="true",
        state=AgentRun.State.RUNNING,
        host="old-host",
        log_path="/old/data/runs/run-7.log",
    )
    done = backup_services.installation_relocate(
        repository_paths={repository.id: str(tmp_path / "repositories" / "app")},
        backup_created_at="2025-01-01T00:00:00+00:00",
        source_host="old-host",
    )
    assert (done.repositories, done.rigs, done.run_logs, done.runs_adopted) == (1, 1, 1, 1)
    repository.refresh_from_db()
    rig.refresh_from_db()
    running.refresh_from_db()
    assert repository.path == str(tmp_path / "repositories" / "app")
    assert rig.worktree_path == str(tmp_path / "worktrees" / "app" / "api")
    assert running.log_path == str(tmp_path / "runs" / "run-7.log")
    assert running.host == host_name()
    event = Event.objects.get(kind="installation.restored")
    assert event.payload["source_host"] == "old-host" and event.payload["runs_adopted"] == 1


def test_what_any_manage_py_makes_does_not_count_as_content(settings, tmp_path):
    """An operator makes the folder first (a mounted volume); `manage.py` itself then puts a
    secret key, an empty staticfiles and an empty metrics folder in it."""
    from backups.operations import _made_at_start

    data_dir = tmp_path / "volume"
    for name in ("metrics", "staticfiles"):
        (data_dir / name).mkdir(parents=True)
    (data_dir / "secret_key").write_text("x" * 50)
    assert all(_made_at_start(entry) for entry in data_dir.iterdir())
    (data_dir / "metrics" / "counter_123.db").write_bytes(b"\0")  # a process wrote metrics
    assert not _made_at_start(data_dir / "metrics")
