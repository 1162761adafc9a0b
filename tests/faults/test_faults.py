"""The fault campaign (issue 18 §2): a real Celery worker is stopped at a named point
(`common.faults`, GASTOWN_FAULT_PAUSE) and SIGKILLed there; the system recovers on its own (a
new worker, and the periodic task the scheduler would send next: `merge_queues_kick`,
`rig_provisions_kick`) and then the audit is clean: nothing lost, nothing published twice.

One run of each point here (docs/reliability.md has the table): the suite runs the two rows
that found bugs, GASTOWN_FAULTS=1 all of them; `bench/faults.py` repeats them. Runs on SQLite
(a file the worker shares) and on PostgreSQL."""

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from django.db import close_old_connections, connection, transaction

from audit.checks import audit_run
from events.models import Event
from notifications.models import Notification
from rigs import operations, services, tasks
from rigs.models import MergeQueueLease, MergeRequest, Rig
from tests.conftest import free_port, worker_process
from tests.conftest import git as run_git
from tests.rigs.helpers import commit_file, register, rig_ready, wait_for, wait_state

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]
S = MergeRequest.State
# The suite runs the rows that found bugs (about 6 s each); the others with GASTOWN_FAULTS=1
# (or bench/faults.py, which repeats every row).
campaign = pytest.mark.skipif(
    not os.environ.get("GASTOWN_FAULTS"), reason="the whole campaign: GASTOWN_FAULTS=1"
)


@pytest.fixture
def fault_dir(tmp_path) -> Path:
    path = tmp_path / "faults"
    path.mkdir()
    return path


def armed(point: str, fault_dir: Path, **env: str):
    """A worker that stops at `point` (once) until it is killed."""
    return worker_process(
        env={"GASTOWN_FAULT_PAUSE": point, "GASTOWN_FAULT_DIR": str(fault_dir), **env}
    )


def recovering():
    """The worker that replaces a killed one (what a service manager restarts), with what was
    queued left in the queue, and the stale-provision age at zero (the kick's minute, skipped)."""
    return worker_process(env={"GASTOWN_PROVISION_STALE_SECONDS": "0"}, purge=False)


def kill_at(app, fault_dir: Path, point: str, whole: bool = True) -> int:
    """Wait for the worker to reach `point`, then SIGKILL it: the whole worker (its main process
    and pool, as the OOM killer or a power cut would) or only the pool process stopped there."""
    marker = fault_dir / point
    wait_for(marker.exists, timeout=60, message=f"the worker to reach {point}")
    pid = int(wait_for(lambda: marker.read_text().strip(), timeout=5))
    if whole:
        os.killpg(app.worker_process.pid, signal.SIGKILL)
        app.worker_process.wait()
    else:
        os.kill(pid, signal.SIGKILL)
    return pid


def assert_audit_clean() -> None:
    report = audit_run()
    assert report.clean, report.text()


def rig_with_work(repository, slug: str) -> Rig:
    rig = rig_ready(repository, slug)
    commit_file(Path(rig.worktree_path), f"{slug}.txt", f"{slug}\n", f"{slug}: work")
    operations.rig_sync_run(rig.id)
    rig.refresh_from_db()
    return rig


def ask_merge(rig: Rig) -> MergeRequest:
    with transaction.atomic():  # enqueues merge_queue_process on commit
        return services.merge_request_create(
            repository=rig.repository, source_branch=rig.branch, target_branch="main", rig=rig
        )


def test_worker_killed_during_worktree_add(git_repo, fault_dir):
    repository = register(git_repo)
    with armed("worktree.add", fault_dir) as app:
        with transaction.atomic():  # enqueues rig_provision on commit
            rig = services.rig_request(repository=repository, slug="api")
        kill_at(app, fault_dir, "worktree.add")
    rig.refresh_from_db()
    assert rig.state == Rig.State.PROVISIONING  # the worktree is there, the row is not done
    with recovering():
        tasks.rig_provisions_kick.delay()  # the scheduler's next tick
        wait_state(rig, Rig.State.READY, Rig.State.FAILED, timeout=60)
    assert rig.state == Rig.State.READY, rig.failure_reason
    assert (Path(rig.worktree_path) / "README.md").is_file()
    assert_audit_clean()


@pytest.mark.parametrize(
    "point",
    [
        pytest.param("merge.before_update_ref", marks=campaign),
        "merge.after_update_ref",
        pytest.param("gate.running", marks=campaign),
    ],
)
def test_worker_killed_while_landing(git_repo, fault_dir, point):
    repository = register(git_repo, gate_command="test -f api.txt", batch_size=2)
    api, docs = rig_with_work(repository, "api"), rig_with_work(repository, "docs")
    before = run_git(git_repo, "rev-parse", "main")
    with armed(point, fault_dir) as app:
        mrs = [ask_merge(api), ask_merge(docs)]
        kill_at(app, fault_dir, point)
    moved = run_git(git_repo, "rev-parse", "main") != before
    assert moved == (point == "merge.after_update_ref")
    with recovering():
        tasks.merge_queues_kick.delay()  # the scheduler's next tick
        for mr in mrs:
            wait_state(mr, S.MERGED, S.FAILED, S.CONFLICTED, timeout=90)
        # (the kick's own run may still hold the lease: stopping the worker then would leave it)
        wait_for(lambda: not MergeQueueLease.objects.exists(), timeout=30)
    assert {mr.state for mr in mrs} == {S.MERGED}, [mr.reason for mr in mrs]
    subjects = run_git(git_repo, "log", "--format=%s", "main").splitlines()
    for rig in (api, docs):
        assert sum(s.startswith(f"Merge {rig.branch} ") for s in subjects) == 1  # once each
    assert all(mr.gate_exit_code == 0 for mr in mrs)
    assert_audit_clean()


@campaign
def test_worker_process_killed_during_a_cascade(git_repo, fault_dir):
    """Only the pool process stopped in the cascade is killed (the OOM killer's way): Celery
    hands its task out again at once (acks_late, reject on worker lost) and the notices come."""
    repository = register(git_repo)
    api, ui = rig_with_work(repository, "api"), rig_with_work(repository, "ui")
    commit_file(Path(api.worktree_path), "ui.txt", "api's take on ui\n", "api: ui too")
    operations.rig_sync_run(api.id)
    with armed("cascade.reading", fault_dir) as app:
        mr = ask_merge(api)
        kill_at(app, fault_dir, "cascade.reading", whole=False)
        wait_state(mr, S.MERGED, timeout=60)
        wait_for(
            lambda: Notification.objects.filter(rig=ui).exists(),
            timeout=60,
            message="the cascade's notice to ui",
        )
        time.sleep(0.5)  # (let the redelivered task finish its transaction)
    assert Notification.objects.filter(rig=ui).count() == 1  # told once
    assert_audit_clean()


# --- Redis killed and started again --------------------------------------------------------


class OwnRedis:
    """A redis-server this test starts (never the machine's), without persistence: killing it
    loses every queued message, the harsher of the two ways a Redis comes back."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        wait_for(lambda: _answers(self.port), timeout=10, message="redis-server to start")

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def broker(url: str):
    """Point this process's Celery app (what services enqueue with) at `url`."""
    from gastown_site.celery import app

    def reset():  # (the pools stay open in kombu's registry: closing one would break it)
        app._pool = None
        app.amqp._producer_pool = None

    saved = app.conf.CELERY_BROKER_URL  # (the namespaced key the settings set wins)
    reset()
    app.conf.CELERY_BROKER_URL = url
    try:
        yield app
    finally:
        reset()
        app.conf.CELERY_BROKER_URL = saved


@campaign
def test_redis_killed_with_a_task_in_flight_and_one_asked_meanwhile(git_repo, fault_dir, tmp_path):
    redis = OwnRedis(tmp_path)
    redis.start()
    repository = register(git_repo, gate_command="test -f api.txt")
    api = rig_with_work(repository, "api")
    env = {
        "REDIS_URL": redis.url,
        "GASTOWN_FAULT_PAUSE": "gate.running",
        "GASTOWN_FAULT_DIR": str(fault_dir),
        "GASTOWN_FAULT_PAUSE_SECONDS": "3",
        "GASTOWN_PROVISION_STALE_SECONDS": "0",
    }
    try:
        with broker(redis.url), worker_process(env=env):
            mr = ask_merge(api)  # in flight: the worker stops in its gate
            wait_for((fault_dir / "gate.running").exists, timeout=60)
            redis.kill()
            with transaction.atomic():  # asked while Redis is down: the row is what counts
                ui = services.rig_request(repository=repository, slug="ui")
            redis.start()  # empty: every queued message is gone
            wait_state(mr, S.MERGED, S.FAILED, timeout=60)  # the gate resumes and lands
            tasks.rig_provisions_kick.delay()  # the scheduler's next tick
            wait_state(ui, Rig.State.READY, Rig.State.FAILED, timeout=60)
    finally:
        redis.kill()
    assert mr.state == S.MERGED, mr.reason
    assert ui.state == Rig.State.READY, ui.failure_reason
    assert_audit_clean()


def test_a_change_asked_while_redis_is_down_is_stored_and_answered(git_repo, caplog):
    """Enqueuing after commit with no broker used to raise out of the request (a 500 for a
    change that was stored): now it is logged, and the kicks find the row (test above)."""
    repository = register(git_repo)
    nobody = f"redis://127.0.0.1:{free_port()}/0"  # nobody listens there
    with broker(nobody), transaction.atomic():
        rig = services.rig_request(repository=repository, slug="api")
    assert Rig.objects.get(pk=rig.pk).state == Rig.State.REQUESTED
    assert "could not enqueue rigs.tasks.rig_provision" in caplog.text


# --- PostgreSQL connections terminated -------------------------------------------------------

postgres = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="pg_terminate_backend is PostgreSQL's"
)


def terminate_backends(*, own: bool = False) -> int:
    """`pg_terminate_backend` on every connection to the test database but the one asking
    (this process's own too when `own`), from a connection of its own."""
    import psycopg

    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as admin:
        row = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            + ("" if own else " AND pid <> %s"),
            () if own else (connection.connection.info.backend_pid,),
        ).fetchone()
    return row[0]


@postgres
def test_the_api_answers_503_when_its_connection_is_terminated():
    from rest_framework.test import APIClient

    _, token = services.agent_create(name="watcher")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/v1/me/").status_code == 200
    assert terminate_backends(own=True) >= 1
    response = client.get("/api/v1/me/")
    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "database_unavailable"
    assert response["Retry-After"] == "5"
    close_old_connections()  # what the server does after each request (the test client not)
    assert client.get("/api/v1/me/").status_code == 200  # the next request connects again


@postgres
@campaign
def test_connections_terminated_in_a_landings_transaction(git_repo, fault_dir):
    """Every app connection is terminated while a worker is inside the transaction that records
    a landing: it is rolled back whole (nothing half-written), the task fails, and the next tick
    records the landing from what the queue wrote before publishing."""
    repository = register(git_repo)
    api = rig_with_work(repository, "api")
    env = {
        "GASTOWN_FAULT_PAUSE": "landing.recording",
        "GASTOWN_FAULT_DIR": str(fault_dir),
        "GASTOWN_FAULT_PAUSE_SECONDS": "2",
    }
    with worker_process(env=env):
        mr = ask_merge(api)
        wait_for((fault_dir / "landing.recording").exists, timeout=60)
        assert terminate_backends() >= 1
        time.sleep(3)  # the worker resumes, its commit fails
        mr.refresh_from_db()
        assert mr.state == S.CHECKING  # nothing of the landing was written
        assert not Event.objects.filter(kind="merge_request.state", payload__to="merged").exists()
        tasks.merge_queues_kick.delay()  # the scheduler's next tick
        wait_state(mr, S.MERGED, S.FAILED, timeout=60)
        wait_for(lambda: not MergeQueueLease.objects.exists(), timeout=30)
    assert mr.state == S.MERGED and mr.merge_commit == run_git(git_repo, "rev-parse", "main")
    assert_audit_clean()


# --- an agent SIGKILLed holding a claim, with uncommitted work ------------------------------


@campaign
@pytest.mark.runner_env(GASTOWN_RUN_MAX_RESTARTS="0")
def test_agent_killed_holding_a_claim_with_uncommitted_work(ready_rig):
    """The claim comes back (its run ended: the supervisor returns what the run held) and the
    work is kept: a forced teardown archives the uncommitted file as a commit."""
    from convoys import services as convoy_services
    from convoys.models import Bead
    from runner import services as runner_services
    from runner.models import AgentRun

    rig = ready_rig("echo wip > wip.txt; echo started; sleep 300", slug="api")
    bead = convoy_services.bead_create(title="half a login", rig=rig)
    run = runner_services.agent_run_request(rig=rig, requested_by="test")
    wait_state(run, AgentRun.State.RUNNING, timeout=60)
    wait_for((Path(rig.worktree_path) / "wip.txt").exists, timeout=30)
    convoy_services.bead_claim(bead=bead, agent=rig.agent)
    bead.refresh_from_db()
    assert bead.claimed_by_run_id == run.id

    os.killpg(run.pid, signal.SIGKILL)  # the agent, not its supervisor
    wait_state(run, AgentRun.State.FAILED, timeout=30)
    bead.refresh_from_db()
    assert (bead.status, bead.assignee_id, bead.claimed_by_run_id) == (Bead.Status.OPEN, None, None)
    assert (Path(rig.worktree_path) / "wip.txt").read_text() == "wip\n"
    assert_audit_clean()

    with transaction.atomic():
        services.rig_teardown_request(rig=rig, force=True, requested_by="test")
    wait_state(rig, Rig.State.ARCHIVED, timeout=60)
    archived = [
        ref for ref in run_git(rig.repository.path, "for-each-ref", "--format=%(refname)",
                               "refs/gastown/archive/").split() if "/api/" in ref
    ]  # fmt: skip
    assert len(archived) == 1
    assert run_git(rig.repository.path, "show", f"{archived[0]}:wip.txt") == "wip"
    assert_audit_clean()


# --- the clock jumps --------------------------------------------------------------------------


def test_a_worker_whose_clock_jumps_an_hour_ahead_misfires_on_nothing(git_repo, monkeypatch):
    """The judges of time (stall detection, the claim sweep, the queue's lease, the runs'
    supervision) read the database's clock: a worker whose own clock is an hour ahead stalls no
    live rig, lapses no live claim and takes no live lease."""
    from datetime import timedelta

    from django.utils import timezone

    from convoys import services as convoy_services
    from convoys.models import Bead
    from convoys.services import leases
    from rigs import merge_queue

    repository = register(git_repo)
    agent, _ = services.agent_create(name="alive")
    with transaction.atomic():
        rig = services.rig_request(repository=repository, slug="api", agent=agent)
    operations.rig_provision_run(rig.id)
    rig.refresh_from_db()
    services.rig_heartbeat(rig=rig)
    bead = convoy_services.bead_create(title="live work", rig=rig)
    convoy_services.bead_claim(bead=bead, agent=agent)
    MergeQueueLease.objects.create(
        repository=repository,
        target_branch="main",
        holder="elsewhere:1:abc",
        expires_at=timezone.now() + timedelta(minutes=5),
    )
    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real_now() + timedelta(hours=1))

    assert services.rigs_mark_stalled() == []
    assert leases.bead_leases_expire() == []
    assert merge_queue.lease_acquire(repository, "main", "jumped", 60) is False
    rig.refresh_from_db()
    bead.refresh_from_db()
    assert rig.state == Rig.State.WORKING and bead.status == Bead.Status.IN_PROGRESS
    assert MergeQueueLease.objects.get().holder == "elsewhere:1:abc"
