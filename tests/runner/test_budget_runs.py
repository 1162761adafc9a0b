"""Budgets enforced on real runs: a real worker, real supervisors, the scripted agent (one usage
line per closed bead: a step) on real rigs."""

from decimal import Decimal
from pathlib import Path

import pytest

from convoys import services as convoy_services
from events.models import Event
from notifications.models import Notification, NotificationVersion
from rigs import services as rig_services
from runner import budgets, services
from runner.models import AgentRun, Budget
from runner.usage import Usage
from tests.rigs.helpers import register, wait_for, wait_rig_state
from tests.runner.conftest import wait_run

pytestmark = pytest.mark.worker
S = AgentRun.State
COST = Decimal("0.10")  # per closed bead
LIMIT = Decimal("1.00")


def spender_rigs(git_repo, command: str, n: int):
    """One agent with `n` ready rigs of its own."""
    repository = register(git_repo)
    agent, _ = rig_services.agent_create(name="spender", runtime="custom", runtime_command=command)
    rigs = [
        rig_services.rig_request(repository=repository, slug=f"spend{i}", agent=agent)
        for i in range(n)
    ]
    return agent, [wait_rig_state(rig, "ready", timeout=60) for rig in rigs]


def test_three_runs_crossing_an_agents_daily_limit_stop_after_their_step(
    git_repo, runner_worker, client, admin_user
):
    command = f"gastown-agent --pace 0.05 --cost-per-bead {COST} --idle-timeout 60"
    agent, rigs = spender_rigs(git_repo, command, 3)
    for rig in rigs:
        for n in range(10):  # $1.00 each: the three together would spend $3.00
            convoy_services.bead_create(title=f"step {n} of {rig.slug}", rig=rig)
    limit = budgets.budget_save(
        budget=Budget(agent=agent, window=Budget.Window.DAY, limit_usd=LIMIT), by="test"
    )
    runs = [services.agent_run_request(rig=rig, requested_by="test") for rig in rigs]
    for run in runs:
        wait_run(run, S.STOPPED, S.SUCCEEDED, S.FAILED, timeout=180)

    # every run was stopped by the budget, none went on or was launched again
    assert [run.state for run in runs] == [S.STOPPED] * 3, [run.reason for run in runs]
    for run in runs:
        assert run.reason.startswith("budget reached: the daily budget of agent spender")
    assert AgentRun.objects.filter(agent=agent).count() == 3
    logs = "".join(Path(run.log_path).read_text() for run in runs)
    assert "# gastown: stopping the agent: budget reached" in logs

    # the overrun is at most one step of each run: after the report that reached the limit,
    # each run reported at most once more (the end of the step it was in)
    reached = Event.objects.get(kind="budget.level", payload__to="reached")
    for run in runs:
        later = Event.objects.filter(kind="run.usage", payload__run=run.id, id__gt=reached.id)
        assert later.count() <= 1, run.id
    spent = sum(run.cost_usd for run in runs)
    assert LIMIT <= spent <= LIMIT + len(runs) * COST, spent

    # nothing started after it, and a launch is refused with the figures
    assert not AgentRun.objects.filter(agent=agent, started_at__gt=reached.created_at).exists()
    client.force_login(admin_user)
    response = client.post(f"/api/v1/rigs/{rigs[0].id}/runs/", {}, content_type="application/json")
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "budget_reached"
    assert f"${spent:,.2f} of $1.00 spent in the last 24 hours" in error["message"]

    # one warning at 80%, one "needs a person" at 100%, left open for a person
    versions = NotificationVersion.objects.filter(notification__topic=f"budget:{limit.pk}")
    assert sorted(v.severity for v in versions) == ["critical", "warning"]
    person = Notification.objects.get(topic=f"budget:{limit.pk}", kind="escalation")
    assert person.state == "open" and person.severity == "critical"
    assert not Notification.objects.filter(kind="escalation").exclude(pk=person.pk).exists()
    assert Budget.objects.get(pk=limit.pk).level == "reached"


def test_a_run_that_reports_nothing_is_stopped_when_the_grace_period_ends(
    git_repo, runner_worker, settings
):
    settings.GASTOWN_BUDGET_GRACE_SECONDS = 2  # the report below is made in this process
    agent, (quiet, loud) = spender_rigs(git_repo, "echo working; sleep 300", 2)
    budgets.budget_save(budget=Budget(agent=agent, limit_usd=LIMIT), by="test")
    quiet_run = services.agent_run_request(rig=quiet, requested_by="test")
    loud_run = services.agent_run_request(rig=loud, requested_by="test")
    wait_run(quiet_run, S.RUNNING)
    wait_run(loud_run, S.RUNNING)
    # the other run reports what reaches the limit (as `gt usage` would)
    budgets.agent_run_usage_add(run=loud_run, usage=Usage(cost_usd=Decimal("1.50")))
    quiet_run.refresh_from_db()
    assert quiet_run.stop_by is not None
    # it never ends a step: its supervisor stops it once the grace period is over
    wait_run(quiet_run, S.STOPPED, timeout=30)
    assert quiet_run.finished_at >= quiet_run.stop_by
    assert "budget reached" in quiet_run.reason
    log = Path(quiet_run.log_path).read_text()
    assert "a budget is reached and the grace period is over" in log
    wait_run(loud_run, S.STOPPED, timeout=30)
    wait_for(lambda: not AgentRun.objects.filter(state__in=AgentRun.ACTIVE_STATES).exists(), 10)
