"""Agent runs end to end: real worker, real processes, real rigs."""

import time
from decimal import Decimal
from pathlib import Path

import pytest

from common import process
from events.models import Event
from notifications.models import Notification
from runner import operations, services
from runner.models import AgentRun
from tests.rigs.helpers import wait_for
from tests.runner.conftest import wait_run

pytestmark = pytest.mark.worker
S = AgentRun.State


def test_run_succeeds_in_its_worktree_with_its_environment_and_log(ready_rig):
    rig = ready_rig(
        'echo "cwd=$(pwd)"; echo "rig=$GT_RIG run=$GT_RUN"; command -v gt; '
        'case "$GT_TOKEN" in gtr_*) echo token-ok;; esac; '
        'test -z "$SECRET_KEY" && echo no-server-secrets; '
        "echo 'GT_USAGE input_tokens=10 output_tokens=5 cost_usd=0.25'"
    )
    run = services.agent_run_request(rig=rig, requested_by="test")
    wait_run(run, S.SUCCEEDED)
    assert run.exit_code == 0
    log = Path(run.log_path).read_text()
    assert f"cwd={rig.worktree_path}" in log
    assert f"rig={rig.id} run={run.id}" in log
    assert "bin/gt" in log
    assert "token-ok" in log and "no-server-secrets" in log
    assert (run.input_tokens, run.output_tokens, run.cost_usd) == (10, 5, Decimal("0.25"))
    kinds = list(
        Event.objects.filter(rig_id=rig.pk, kind="run.state").values_list("payload", flat=True)
    )
    assert [k["to"] for k in kinds] == ["queued", "starting", "running", "succeeded"]
    wait_for(lambda: not process.run_processes(run.id), 10, message="supervisor gone")


@pytest.mark.runner_env(GASTOWN_RUN_LOG_MAX_BYTES="20000")
def test_a_flood_of_output_keeps_the_log_bounded_and_its_usage_counted(ready_rig):
    rig = ready_rig(
        'echo first-line; i=0; while [ $i -lt 3000 ]; do echo "line $i of a chatty agent"; '
        "i=$((i+1)); done; echo 'GT_USAGE input_tokens=7 output_tokens=3 cost_usd=0.01'"
    )
    run = services.agent_run_request(rig=rig, requested_by="test")
    wait_run(run, S.SUCCEEDED)
    log = Path(run.log_path).read_text()
    assert len(log) < 20_000 + 5_000 + 1_000  # the head, the tail and Gas Town's own lines
    assert "first-line" in log and "line 10 of a chatty agent" in log
    assert "the log limit of 20000 bytes is reached" in log
    assert "line 2999 of a chatty agent\nGT_USAGE" in log  # the tail
    assert "line 1500 of a chatty agent" not in log
    assert log.endswith("# gastown: exited with code 0\n")
    assert run.cost_usd == Decimal("0.01")  # output left out of the log is still read


def test_crashing_command_is_restarted_then_escalated(ready_rig):
    rig = ready_rig("echo boom; exit 3")
    first = services.agent_run_request(rig=rig, requested_by="test")

    def all_failed():
        runs = list(AgentRun.objects.filter(rig=rig).order_by("id"))
        return len(runs) == 3 and all(r.state == S.FAILED for r in runs) and runs

    runs = wait_for(all_failed, 60, message="three failed attempts")
    assert [r.attempt for r in runs] == [1, 2, 3]
    assert [r.exit_code for r in runs] == [3, 3, 3]
    assert runs[0].id == first.id and runs[1].restart_of_id == first.id
    # backoff: each restart waited at least its not_before
    assert all(r.started_at >= r.not_before for r in runs[1:])
    assert runs[2].escalated_at is not None and runs[0].escalated_at is None
    note = Notification.objects.get(rig=rig, kind=Notification.Kind.ESCALATION)
    assert note.severity == Notification.Severity.CRITICAL
    assert "exited with code 3" in note.summary
    assert Event.objects.filter(rig_id=rig.pk, kind="run.escalated").count() == 1


@pytest.mark.runner_env(GASTOWN_MAX_AGENTS="1")
def test_concurrency_cap_queues_the_rest(ready_rig):
    rigs = [ready_rig("sleep 0.6", slug=f"cap{n}") for n in range(3)]
    runs = [services.agent_run_request(rig=rig, requested_by="test") for rig in rigs]
    peak = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        states = list(AgentRun.objects.filter(rig__in=rigs).values_list("state", flat=True))
        peak = max(peak, sum(s in AgentRun.PROCESS_STATES for s in states))
        if all(s == S.SUCCEEDED for s in states) and len(states) == 3:
            break
        time.sleep(0.02)
    for run in runs:
        run.refresh_from_db()
    assert [r.state for r in runs] == [S.SUCCEEDED] * 3
    assert peak == 1
    spans = sorted((r.started_at, r.finished_at) for r in runs)
    assert all(spans[i][1] <= spans[i + 1][0] for i in range(2)), spans


def test_stop_terminates_the_process_group_and_leaves_nothing(ready_rig, client, admin_user):
    rig = ready_rig("sleep 300 & sleep 301 & trap '' TERM; sleep 302; wait")
    run = services.agent_run_request(rig=rig, requested_by="test")
    wait_run(run, S.RUNNING)
    wait_for(lambda: len(process.run_processes(run.id)) >= 4, 10, message="agent children")
    client.force_login(admin_user)
    response = client.post(f"/api/v1/runs/{run.id}/stop/", content_type="application/json")
    assert response.status_code == 200, response.content
    wait_run(run, S.STOPPED, timeout=30)
    assert "stopped by admin" in run.reason
    wait_for(lambda: not process.run_processes(run.id), 10, message="no process left")


def test_silent_run_is_killed_and_restarted(ready_rig, settings):
    rig = ready_rig("echo hi; sleep 300")
    run = services.agent_run_request(rig=rig, requested_by="test")
    wait_run(run, S.RUNNING)
    settings.GASTOWN_HEARTBEAT_LIMIT_SECONDS = 0
    operations.agent_runs_supervise()
    wait_run(run, S.FAILED, timeout=30)
    assert "silent for" in run.reason
    wait_for(lambda: not process.run_processes(run.id), 10, message="no process left")
    wait_for(lambda: AgentRun.objects.filter(restart_of=run).exists(), 10, message="restart")


def _convoy_on(rig, budget=None):
    from convoys import services as convoy_services

    convoy = convoy_services.convoy_create(
        title="Paid work",
        repository=rig.repository,
        legs=[{"key": "only", "title": "the only leg", "rig": rig.id}],
    )
    if budget is not None:
        type(convoy).objects.filter(pk=convoy.pk).update(budget_usd=Decimal(budget))
    return convoy_services.convoy_launch(convoy=convoy)


def test_convoy_handing_a_leg_launches_the_agent(ready_rig):
    rig = ready_rig("gt whoami; gt inbox")
    convoy = _convoy_on(rig)
    run = wait_for(lambda: AgentRun.objects.filter(rig=rig).first(), 10, message="a run")
    assert run.convoy_id == convoy.id and run.leg.key == "only"
    assert run.requested_by == f"convoy:{convoy.slug}"
    wait_run(run, S.SUCCEEDED)
    log = Path(run.log_path).read_text()
    # the agent reached the API with its run token, as its agent
    assert f"agent {rig.agent.name}" in log
    assert "Leg only of convoy 'Paid work' is yours" in log


@pytest.mark.runner_env(GASTOWN_RUN_MAX_RESTARTS="1")
def test_an_agent_that_stops_early_goes_on_then_is_woken_when_told_to_act(ready_rig):
    from notifications.services import notification_send

    rig = ready_rig("gt inbox")  # exits 0 at once: the leg is not done
    _convoy_on(rig)
    first = wait_for(lambda: AgentRun.objects.filter(rig=rig).first(), 10, message="a run")
    wait_run(first, S.SUCCEEDED)
    again = wait_for(
        lambda: AgentRun.objects.filter(restart_of=first).first(), 20, message="continuation"
    )
    assert again.attempt == 2 and "it exited with leg only still" in again.reason
    wait_run(again, S.SUCCEEDED)
    note = wait_for(
        lambda: Notification.objects.filter(rig=rig, kind="escalation").first(), 20, message="ask"
    )
    assert "it ended 2 time(s) with leg only not done" in note.summary
    assert AgentRun.objects.filter(rig=rig).count() == 2  # the restarts are used up

    # Later its rig is told to act: the idle agent is launched, and reads what it was told.
    notification_send(rig=rig, kind="base_moved", severity="info", summary="main moved")
    notification_send(
        rig=rig,
        kind="interface_changed",
        severity="warning",
        summary="api: tokens are signed v2 now",
        action="update the client",
    )
    woken = wait_for(
        lambda: AgentRun.objects.filter(rig=rig, requested_by="runner:wake").first(),
        20,
        message="the agent woken",
    )
    assert woken.reason.startswith("woken by 1 unacknowledged notification(s): api: tokens")
    wait_run(woken, S.SUCCEEDED)
    assert "api: tokens are signed v2 now" in Path(woken.log_path).read_text()


def test_budget_reached_stops_launching_and_says_so(ready_rig, client, admin_user):
    rig = ready_rig("echo 'GT_USAGE input_tokens=1000 output_tokens=10 cost_usd=0.10'; exit 1")
    convoy = _convoy_on(rig, budget="0.05")
    run = wait_for(lambda: AgentRun.objects.filter(rig=rig).first(), 10, message="a run")
    # the budget stops its runs after their step (the usage line): stopped, not restarted
    wait_run(run, S.STOPPED)
    assert run.reason.startswith("budget reached: the lifetime budget of convoy 'Paid work'")
    convoy.refresh_from_db()
    assert convoy.spent_usd == Decimal("0.10")
    reached = Event.objects.get(convoy_id=convoy.pk, kind="convoy.budget_reached")
    assert "reached its budget: $0.10 spent of $0.05" in reached.payload["message"]
    # a person is asked once, by the budget (its notice), not by the run
    note = Notification.objects.get(rig=rig, kind="escalation")
    assert note.summary.startswith("Needs a person: convoy 'Paid work' reached its budget")
    assert AgentRun.objects.filter(rig=rig).count() == 1
    client.force_login(admin_user)
    response = client.post(f"/api/v1/rigs/{rig.id}/runs/", {}, content_type="application/json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "budget_reached"
    body = client.get(f"/api/v1/convoys/{convoy.id}/").json()
    assert body["spent_usd"] == "0.1000" and body["budget_reached"] is True


def test_agent_reports_usage_with_gt_and_people_follow_the_log(ready_rig, asgi_server, admin_user):
    import subprocess
    import sys

    from rigs.models import ApiToken
    from tests.conftest import BASE_DIR, subprocess_env

    rig = ready_rig(
        "gt usage --input-tokens 3 --output-tokens 4 --cost 0.05 && "
        "gt run list --json > /dev/null && echo listed-my-runs"
    )
    run = services.agent_run_request(rig=rig, requested_by="test")
    wait_run(run, S.SUCCEEDED)
    assert (run.input_tokens, run.output_tokens, run.cost_usd) == (3, 4, Decimal("0.05"))
    token = ApiToken(user=admin_user, name="cli")
    raw = token.issue()
    token.save()
    env = {**subprocess_env(), "GT_URL": asgi_server, "GT_TOKEN": raw}

    def gt(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(BASE_DIR / "bin" / "gt"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    log = gt("run", "log", str(run.id), "--follow")
    assert log.returncode == 0, log.stderr
    assert "listed-my-runs" in log.stdout and "exited with code 0" in log.stdout
    listed = gt("run", "list", "--rig", str(rig.id))
    assert f"{run.id}" in listed.stdout and "[succeeded exit 0]" in listed.stdout
    stopped = gt("run", "stop", str(run.id))
    assert stopped.returncode == 5 and "already ended" in stopped.stderr
    assert gt("run", "stop", "x; rm -rf /").returncode == 2


def test_cancelling_a_convoy_stops_its_agents(ready_rig):
    from convoys import services as convoy_services

    rig = ready_rig("echo working; sleep 300")
    convoy = _convoy_on(rig)
    run = wait_for(lambda: AgentRun.objects.filter(rig=rig).first(), 10, message="a run")
    wait_run(run, S.RUNNING)
    convoy_services.convoy_cancel(convoy=convoy, reason="changed our minds")
    wait_run(run, S.STOPPED, timeout=30)
    assert f"convoy {convoy.slug} cancelled" in run.reason
    wait_for(lambda: not process.run_processes(run.id), 10, message="no process left")


def test_killed_supervisor_is_found_and_its_agent_killed_and_restarted(ready_rig):
    import os
    import signal

    rig = ready_rig("echo up; sleep 300")
    run = services.agent_run_request(rig=rig, requested_by="test")
    wait_run(run, S.RUNNING)
    os.kill(run.supervisor_pid, signal.SIGKILL)  # a crash of the process watching the agent
    wait_for(lambda: not process.process_is_run(run.supervisor_pid, run.id), 10)
    operations.agent_runs_supervise()
    run.refresh_from_db()
    assert run.state == S.FAILED and "supervisor process disappeared" in run.reason
    wait_for(lambda: not process.run_processes(run.id), 10, message="the orphaned agent killed")
    assert AgentRun.objects.filter(restart_of=run).exists()
