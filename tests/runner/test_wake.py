"""Keeping agents at work: an agent that exits cleanly with its leg still to do is launched
again (bounded by the restart limit, then a person is asked), and an idle agent whose rig is
told to act is launched to act on it.

The decisions are tested here against the database; tests/runner/test_runs.py runs both with
a real worker and real agent processes.
"""

import pytest
from django.db import transaction

from convoys.models import Convoy, Leg
from events.models import Event
from notifications.models import Notification
from notifications.services import notification_send
from rigs.models import Rig
from runner import services, wakes
from runner.models import AgentRun
from tests import factories

pytestmark = pytest.mark.django_db
S = AgentRun.State


def working_rig(leg_state: str = Leg.State.WORKING, convoy_state: str = Convoy.State.LAUNCHED):
    agent = factories.agent(runtime_command="my-agent")
    rig = factories.rig(state=Rig.State.WORKING, agent=agent)
    convoy = factories.convoy(repository=rig.repository, title="Auth", state=convoy_state)
    leg = factories.leg(convoy=convoy, key="api", rig=rig, state=leg_state)
    return rig, leg


def running(rig: Rig, leg: Leg | None, attempt: int = 1) -> AgentRun:
    return AgentRun.objects.create(
        rig=rig,
        agent=rig.agent,
        leg=leg,
        convoy=leg.convoy if leg else None,
        command="my-agent",
        state=S.RUNNING,
        attempt=attempt,
    )


def exit_cleanly(run: AgentRun) -> AgentRun | None:
    """End the run with exit code 0; return the run launched after it, if any."""
    with transaction.atomic():
        services.agent_run_exited(run=run, exit_code=0)
    run.refresh_from_db()
    assert run.state == S.SUCCEEDED
    return AgentRun.objects.filter(restart_of=run).first()


# --- a clean exit with the leg still to do ------------------------------------------------------


@pytest.mark.parametrize("leg_state", [Leg.State.READY, Leg.State.WORKING])
def test_a_clean_exit_with_the_leg_still_to_do_is_continued(leg_state, settings):
    settings.GASTOWN_RUN_MAX_RESTARTS = 2
    rig, leg = working_rig(leg_state)
    after = exit_cleanly(running(rig, leg))
    assert after is not None and after.state == S.QUEUED
    assert after.attempt == 2 and after.leg == leg and after.requested_by == "runner"
    assert after.not_before is None  # a clean exit is no crash: no backoff
    assert f"it exited with leg api still {leg_state}" in after.reason


@pytest.mark.parametrize(
    "leg_state", [Leg.State.PENDING, Leg.State.MERGING, Leg.State.LANDED, Leg.State.CANCELLED]
)
def test_a_clean_exit_is_the_end_when_the_leg_needs_no_agent(leg_state):
    rig, leg = working_rig(leg_state)
    assert exit_cleanly(running(rig, leg)) is None
    assert not Notification.objects.filter(kind="escalation").exists()


def test_a_clean_exit_is_the_end_without_a_leg_or_in_a_draft_convoy():
    rig, _ = working_rig()
    assert exit_cleanly(running(rig, None)) is None
    rig, leg = working_rig(convoy_state=Convoy.State.DRAFT)
    assert exit_cleanly(running(rig, leg)) is None


def test_continuations_used_up_ask_a_person(settings):
    settings.GASTOWN_RUN_MAX_RESTARTS = 2
    rig, leg = working_rig()
    assert exit_cleanly(running(rig, leg, attempt=3)) is None
    note = Notification.objects.get(rig=rig, kind="escalation")
    assert "it ended 3 time(s) with leg api not done" in note.summary
    assert Event.objects.filter(kind="run.escalated").exists()


def test_a_failure_still_backs_off(settings):
    settings.GASTOWN_RUN_MAX_RESTARTS = 2
    settings.GASTOWN_RUN_BACKOFF_SECONDS = 10
    rig, leg = working_rig()
    run = running(rig, leg)
    with transaction.atomic():
        services.agent_run_exited(run=run, exit_code=3)
    after = AgentRun.objects.get(restart_of=run)
    assert after.not_before is not None and "exited with code 3" in after.reason


# --- waking idle agents -------------------------------------------------------------------------


def tell(rig: Rig, kind: str = "interface_changed", summary: str = "api: tokens are v2 now"):
    return notification_send(
        rig=rig, kind=kind, severity="warning", summary=summary, action="update the client"
    )


def test_an_idle_agent_told_to_act_is_launched():
    rig, leg = working_rig()
    tell(rig)
    tell(rig, "merge_conflicted", "merge of rig/x conflicted in api/tokens.py")
    assert wakes.agent_runs_wake(rig_ids=[rig.id]) == [rig.id]
    run = AgentRun.objects.get(rig=rig)
    assert run.state == S.QUEUED and run.leg == leg and run.requested_by == "runner:wake"
    assert run.reason == (
        "woken by 2 unacknowledged notification(s): merge of rig/x conflicted in api/tokens.py"
    )
    assert wakes.agent_runs_wake(rig_ids=[rig.id]) == []  # it is queued: not twice


def test_waking_leaves_alone_who_needs_no_wake(django_assert_max_num_queries):
    busy, _ = working_rig()
    running(busy, None)
    no_command, _ = working_rig()
    type(no_command.agent).objects.filter(pk=no_command.agent_id).update(runtime_command="")
    acked, _ = working_rig()
    tell(acked)
    Notification.objects.filter(rig=acked).update(
        acked_at="2026-01-01T00:00Z", state="acknowledged"
    )
    waiting, _ = working_rig(Leg.State.PENDING)
    merging, _ = working_rig(Leg.State.MERGING)
    told_only_news, _ = working_rig()
    tell(told_only_news, "base_moved", "main moved")
    no_leg = factories.rig(state=Rig.State.WORKING, agent=factories.agent(runtime_command="x"))
    due, _ = working_rig()
    for rig in (busy, no_command, waiting, merging, no_leg, due):
        tell(rig)
    rigs = [busy, no_command, acked, waiting, merging, told_only_news, no_leg, due]
    with django_assert_max_num_queries(30):  # a few queries, plus one launch
        woken = wakes.agent_runs_wake(rig_ids=[r.id for r in rigs])
    assert woken == [due.id]
    assert list(AgentRun.objects.filter(state=S.QUEUED).values_list("rig_id", flat=True)) == [
        due.id
    ]


def test_wakes_are_bounded_per_leg_then_a_person_is_asked(settings):
    settings.GASTOWN_RUN_MAX_WAKES = 2
    rig, leg = working_rig()
    AgentRun.objects.create(
        rig=rig, agent=rig.agent, leg=leg, command="x", state=S.SUCCEEDED, requested_by="olive"
    )

    def wake_and_finish(summary: str) -> list[int]:
        tell(rig, summary=summary)
        woken = wakes.agent_runs_wake(rig_ids=[rig.id])
        # it ran and a continuation ended the chain (restarts do not count as wakes)
        run = AgentRun.objects.filter(rig=rig).order_by("-id").first()
        AgentRun.objects.filter(rig=rig).update(state=S.SUCCEEDED)
        AgentRun.objects.create(
            rig=rig, agent=rig.agent, leg=leg, command="x", state=S.SUCCEEDED,
            requested_by="runner", restart_of=run,
        )  # fmt: skip
        return woken

    assert wake_and_finish("gate failed 1") == [rig.id]
    assert wake_and_finish("gate failed 2") == [rig.id]
    assert wake_and_finish("gate failed 3") == []  # two wakes in a row: enough
    note = Notification.objects.get(rig=rig, kind="escalation")
    assert "it was woken 2 time(s) for leg api and the leg is still not done" in note.summary
    assert wake_and_finish("gate failed 4") == []
    assert Notification.objects.get(rig=rig, kind="escalation").occurrences == 1  # asked once
    # a person launches it again: the count starts over
    AgentRun.objects.create(
        rig=rig, agent=rig.agent, leg=leg, command="x", state=S.SUCCEEDED, requested_by="olive"
    )
    assert wake_and_finish("gate failed 5") == [rig.id]


def test_no_wakes_at_all_when_the_limit_is_zero(settings):
    settings.GASTOWN_RUN_MAX_WAKES = 0
    rig, _ = working_rig()
    tell(rig)
    assert wakes.agent_runs_wake(rig_ids=[rig.id]) == []
    assert not AgentRun.objects.exists()
    assert not Notification.objects.filter(kind="escalation").exists()


def test_a_refused_wake_says_why_on_the_convoy():
    rig, leg = working_rig()
    Convoy.objects.filter(pk=leg.convoy_id).update(budget_usd="1.00", spent_usd="1.00")
    tell(rig)
    assert wakes.agent_runs_wake(rig_ids=[rig.id]) == []
    refused = Event.objects.get(kind="run.refused")
    assert refused.convoy_id == leg.convoy_id and "reached its budget" in refused.payload["reason"]


def test_only_notifications_asking_to_act_schedule_a_wake(django_capture_on_commit_callbacks):
    def wakes(callbacks) -> list:
        return [c for c in callbacks if "rigs_wake_later" in c.__qualname__]

    rig, _ = working_rig()
    with django_capture_on_commit_callbacks() as callbacks:
        tell(rig, "base_moved", "main moved")
        tell(rig, "info", "hello")
    assert wakes(callbacks) == []
    with django_capture_on_commit_callbacks() as callbacks:
        tell(rig)
        tell(rig)  # a repeat of an unacknowledged one is not new
    assert len(wakes(callbacks)) == 1
