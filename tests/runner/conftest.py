"""Fixtures for agent runs: a real worker with runner settings, rigs ready on real
repositories, and a clean-up that leaves no agent process behind."""

import contextlib
import os
import signal
import uuid

import pytest

from common import process
from rigs import services as rig_services
from runner.models import AgentRun
from tests.api.conftest import make_agent, make_person, operator, viewer  # noqa: F401
from tests.conftest import worker_process
from tests.rigs.helpers import register, wait_rig_state, wait_state

DEFAULT_ENV = {
    "GASTOWN_MAX_AGENTS": "4",
    "GASTOWN_RUN_MAX_RESTARTS": "2",
    "GASTOWN_RUN_BACKOFF_SECONDS": "0.2",
    "GASTOWN_RUN_STOP_GRACE_SECONDS": "3",
}


@pytest.fixture
def runner_env(request, monkeypatch, settings) -> dict[str, str]:
    """Runner settings for this test, in this process and in the worker it starts
    (`@pytest.mark.runner_env(GASTOWN_MAX_AGENTS="1")` overrides)."""
    marker = request.node.get_closest_marker("runner_env")
    env = {**DEFAULT_ENV, **(marker.kwargs if marker else {})}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings.GASTOWN_MAX_AGENTS = int(env["GASTOWN_MAX_AGENTS"])
    settings.GASTOWN_RUN_MAX_RESTARTS = int(env["GASTOWN_RUN_MAX_RESTARTS"])
    settings.GASTOWN_RUN_BACKOFF_SECONDS = float(env["GASTOWN_RUN_BACKOFF_SECONDS"])
    settings.GASTOWN_RUN_STOP_GRACE_SECONDS = float(env["GASTOWN_RUN_STOP_GRACE_SECONDS"])
    return env


@pytest.fixture
def runner_worker(runner_env, asgi_server, monkeypatch, redis_server, transactional_db, settings):
    """A real Celery worker with beat (the runner's periodic supervision is part of how runs
    progress, as deployed), started after the runner settings are in the environment."""
    monkeypatch.setenv("GASTOWN_URL", asgi_server)  # agents reach this server (GT_URL)
    settings.GASTOWN_URL = asgi_server
    schedule = settings.DATA_DIR / f"beat-{uuid.uuid4().hex[:8]}"
    with worker_process("--beat", "--schedule", str(schedule)) as worker:
        try:
            yield worker
        finally:
            runs_kill_all()


def runs_kill_all() -> None:
    """Kill every process of this test's runs (supervisors included)."""
    for run_id in AgentRun.objects.values_list("id", flat=True):
        for pid in process.run_processes(run_id):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def ready_rig(git_repo, runner_worker):
    """make_rig(command, slug=...): a provisioned rig whose agent runs `command`."""
    repository = register(git_repo)

    def make(command: str, slug: str = "r1", **agent_kw):
        agent, _ = rig_services.agent_create(
            name=f"agent-{slug}", runtime="custom", runtime_command=command, **agent_kw
        )
        rig = rig_services.rig_request(repository=repository, slug=slug, agent=agent)
        return wait_rig_state(rig, "ready", timeout=60)

    return make


def wait_run(run: AgentRun, *states: str, timeout: float = 60.0) -> AgentRun:
    return wait_state(run, *states, timeout=timeout, name=f"run {run.id}")
