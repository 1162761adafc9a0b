"""An agent that ends its turn without a merge (`gt done --status escalated|deferred`) is not
relaunched until a person acts: the runner neither continues it after it exits, nor wakes it,
nor launches it for that leg; a person answering the notice or launching the agent lets it go
on (an answer also wakes it, to read the answer).

Decisions against the database, as in test_wake.py; tests/api/test_cli_coordination.py runs
the verb through `gt` against a real server."""

import pytest
from django.db import transaction

from convoys.services import coordination
from notifications.models import Notification
from notifications.services import notification_send
from runner import services, wakes
from runner.models import AgentRun
from tests.runner.test_wake import exit_cleanly, running, working_rig

pytestmark = pytest.mark.django_db
S = AgentRun.State


def end_turn(rig, status="deferred", reason="waiting for the schema decision"):
    with transaction.atomic():
        return coordination.rig_turn_end(rig=rig, status=status, reason=reason, by=rig.agent.name)


@pytest.mark.parametrize("status", ["deferred", "escalated"])
def test_an_ended_turn_is_not_continued_after_the_agent_exits(status, settings):
    settings.GASTOWN_RUN_MAX_RESTARTS = 2
    rig, leg = working_rig()
    run = running(rig, leg)
    notice = end_turn(rig, status)
    assert notice.topic == f"turn:{leg.id}" and notice.is_open
    assert exit_cleanly(run) is None  # no restart, and no escalation of its own
    assert Notification.objects.filter(rig=rig, state="open").count() == 1
    with transaction.atomic():
        services.agent_run_exited(run=running(rig, leg, attempt=2), exit_code=1)
    assert not AgentRun.objects.filter(state=S.QUEUED).exists()  # a failure neither


def test_an_ended_turn_is_not_woken_nor_launched_for_its_leg():
    rig, leg = working_rig()
    end_turn(rig)
    notification_send(rig=rig, kind="gate_failed", severity="critical", summary="gate failed")
    assert wakes.agent_runs_wake(rig_ids=[rig.id]) == []
    assert services.agent_run_launch_for_handed_leg(leg=leg, rig=rig) is None
    assert not AgentRun.objects.exists()


def test_a_person_launching_the_agent_answers_the_ended_turn():
    rig, leg = working_rig()
    notice = end_turn(rig, "escalated")
    with transaction.atomic():
        run = services.agent_run_request(rig=rig, requested_by="olive", by_person=True)
    assert run.state == S.QUEUED
    notice.refresh_from_db()
    assert notice.state == "resolved"
    assert notice.resolution == "the agent was launched again by olive"
    assert coordination.turn_topic(leg.id) == notice.topic


def test_an_answer_resolves_the_turn_and_wakes_the_agent_to_read_it(
    django_capture_on_commit_callbacks,
):
    rig, leg = working_rig()
    notice = end_turn(rig, "escalated", "Which token format: JWT or opaque?")
    with django_capture_on_commit_callbacks(execute=False) as callbacks, transaction.atomic():
        resolved, reply = coordination.notice_answer(
            notification=notice, answer="Opaque.", by="olive"
        )
    assert resolved.state == "resolved" and reply.reply_to_id == notice.id
    assert any("rigs_wake_later" in c.__qualname__ for c in callbacks)
    assert wakes.agent_runs_wake(rig_ids=[rig.id]) == [rig.id]
    run = AgentRun.objects.get(rig=rig)
    assert run.leg == leg and "olive answered" in run.reason


def test_a_peer_message_does_not_wake_an_idle_agent(django_capture_on_commit_callbacks):
    rig, _ = working_rig()
    other, _ = working_rig()
    with django_capture_on_commit_callbacks(execute=False) as callbacks, transaction.atomic():
        coordination.message_send(recipients=[rig], text="fyi", sender="x", from_rig=other)
    assert not any("rigs_wake_later" in c.__qualname__ for c in callbacks)
