"""A rig whose leg has landed is done: its agent is never relaunched (after a clean exit or a
failure), never woken by a notice, and a launch is refused with the reason."""

import pytest
from django.db import transaction

from convoys.models import Convoy, Leg
from notifications.models import Notification
from notifications.services import notification_send
from rigs.models import MergeRequest, Rig
from runner import services, wakes
from runner.models import AgentRun
from tests import factories

pytestmark = pytest.mark.django_db
S = AgentRun.State


def landed_rig() -> tuple[Rig, Leg]:
    """A merged rig whose (only) leg landed, with its agent still running."""
    agent = factories.agent(runtime_command="my-agent")
    rig = factories.rig(state=Rig.State.MERGED, agent=agent)
    convoy = factories.convoy(repository=rig.repository, title="Auth", state=Convoy.State.LANDED)
    mr = factories.merge_request(
        rig=rig, state=MergeRequest.State.MERGED, merge_commit="e" * 40, target_branch="main"
    )
    leg = factories.leg(
        convoy=convoy, key="api", rig=rig, state=Leg.State.LANDED, landed_merge_request=mr
    )
    return rig, leg


def running(rig: Rig, leg: Leg) -> AgentRun:
    return AgentRun.objects.create(
        rig=rig, agent=rig.agent, leg=leg, convoy=leg.convoy, command="my-agent", state=S.RUNNING
    )


@pytest.mark.parametrize("exit_code", [0, 1])
def test_an_agent_whose_leg_landed_is_not_relaunched(exit_code, settings):
    settings.GASTOWN_RUN_MAX_RESTARTS = 3
    rig, leg = landed_rig()
    run = running(rig, leg)
    with transaction.atomic():
        services.agent_run_exited(run=run, exit_code=exit_code)
    run.refresh_from_db()
    assert run.state == (S.SUCCEEDED if exit_code == 0 else S.FAILED)
    assert not AgentRun.objects.filter(restart_of=run).exists()
    assert not AgentRun.objects.filter(state=S.QUEUED).exists()
    # nothing to ask a person either: the work is done
    assert not Notification.objects.filter(kind="escalation").exists()


def test_a_failure_while_the_leg_is_open_is_still_restarted(settings):
    """(The check above is about finished work only.)"""
    settings.GASTOWN_RUN_MAX_RESTARTS = 3
    rig, leg = landed_rig()
    Leg.objects.filter(pk=leg.pk).update(state=Leg.State.WORKING)
    Convoy.objects.filter(pk=leg.convoy_id).update(state=Convoy.State.LAUNCHED)
    Rig.objects.filter(pk=rig.pk).update(state=Rig.State.WORKING)
    run = running(rig, leg)
    with transaction.atomic():
        services.agent_run_exited(run=run, exit_code=1)
    assert AgentRun.objects.filter(restart_of=run, state=S.QUEUED).exists()


def test_a_rig_whose_leg_landed_is_never_woken():
    rig, _ = landed_rig()
    notification_send(
        rig=rig,
        kind=Notification.Kind.INTERFACE_CHANGED,
        severity="warning",
        summary="api: tokens are v2 now",
        action="update the client",
    )
    assert wakes.agent_runs_wake(rig_ids=[rig.id]) == []
    assert not AgentRun.objects.exists()


def test_launching_an_agent_in_a_finished_rig_is_refused(make_agent, operator):
    rig, _ = landed_rig()
    response = operator.post(f"/api/v1/rigs/{rig.id}/runs/", {}, format="json")
    assert response.status_code == 409, response.json()
    error = response.json()["error"]
    assert error["code"] == "work_finished"
    assert "leg `api` of convoy 'Auth' landed in eeeeeeeeeeee" in error["message"]
    assert not AgentRun.objects.exists()
    # a merged rig that never had a leg: its branch landed, nothing more to do either
    alone = factories.rig(state=Rig.State.MERGED, agent=factories.agent(runtime_command="x"))
    factories.merge_request(rig=alone, state=MergeRequest.State.MERGED, merge_commit="f" * 40)
    response = operator.post(f"/api/v1/rigs/{alone.id}/runs/", {}, format="json")
    assert (
        response.status_code == 409
        and "its branch landed in ffffffffffff" in (response.json()["error"]["message"])
    )
    # a merged rig handed a new leg has work again
    convoy = factories.convoy(repository=alone.repository, state=Convoy.State.LAUNCHED)
    factories.leg(convoy=convoy, key="next", rig=alone, state=Leg.State.READY)
    assert operator.post(f"/api/v1/rigs/{alone.id}/runs/", {}, format="json").status_code == 202
