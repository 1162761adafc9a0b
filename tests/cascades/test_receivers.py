"""`cascades.receivers`: the rigs' signals reach the cascades, after the convoys have moved; the
landed-merge cascade is enqueued after commit, the refused one runs in the same transaction."""

import pytest
from django.db import transaction

from cascades.refused import cascade_merge_refused
from convoys import services
from events.models import Event
from notifications.models import Notification
from rigs import signals
from rigs.models import MergeRequest, Rig
from tests import factories

pytestmark = pytest.mark.django_db


def new_events(after: int) -> list[tuple[str, dict]]:
    return [(e.kind, e.payload) for e in Event.objects.filter(pk__gt=after).order_by("id")]


def last_event_id() -> int:
    return Event.objects.order_by("-id").values_list("id", flat=True).first() or 0


def two_leg_convoy():
    repo = factories.repository()
    a = factories.rig(repository=repo, slug="a", state=Rig.State.READY)
    b = factories.rig(repository=repo, slug="b", state=Rig.State.READY)
    convoy = services.convoy_create(
        title="Two legs",
        repository=repo,
        legs=[
            {"key": "one", "title": "One", "rig": a},
            {"key": "two", "title": "Two", "rig": b, "depends_on": ["one"]},
        ],
    )
    services.convoy_launch(convoy=convoy)
    return convoy, a, b


def land_signal(convoy, mr, old_tip: str, new_tip: str) -> None:
    with transaction.atomic():
        signals.merge_landed.send(
            sender=MergeRequest,
            merge_requests=[mr],
            repository=convoy.repository,
            target_branch="main",
            old_tip=old_tip,
            new_tip=new_tip,
            changed_paths=[],
        )


def test_a_landing_moves_the_convoy_then_enqueues_the_cascade_after_commit(
    monkeypatch, django_capture_on_commit_callbacks
):
    convoy, a, b = two_leg_convoy()
    mr = factories.merge_request(rig=a, target_branch="main", state=MergeRequest.State.MERGED)
    enqueued = []

    def delay(*args):
        # the convoy moved (and committed) before the cascade is asked for
        assert convoy.legs.get(key="one").state == "landed"
        enqueued.append(args)

    monkeypatch.setattr("cascades.tasks.cascade_merge_landed.delay", delay)
    after = last_event_id()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        land_signal(convoy, mr, "1" * 40, "2" * 40)
        assert enqueued == []  # not inside the transaction
    [one, two] = convoy.legs.order_by("position")
    assert new_events(after)[:2] == [
        ("leg.state", {"leg": one.id, "key": "one", "from": "ready", "to": "landed"}),
        ("leg.state", {"leg": two.id, "key": "two", "from": "pending", "to": "ready"}),
    ]
    # b is told its leg is ready; a's work is finished, so what a was told is resolved
    assert [k for k, _ in new_events(after)][2:] == ["notification.new", "notification.resolved"]
    assert new_events(after)[3][1]["rig"] == a.id
    assert Notification.objects.get(rig=b).kind == Notification.Kind.UNBLOCKED
    assert enqueued == [(convoy.repository.id, "main", "1" * 40, "2" * 40, [mr.id])]
    assert callbacks  # the enqueue was an on-commit callback


def test_a_landing_without_a_moved_tip_enqueues_nothing(
    monkeypatch, django_capture_on_commit_callbacks
):
    convoy, a, _ = two_leg_convoy()
    mr = factories.merge_request(rig=a, target_branch="main", state=MergeRequest.State.MERGED)
    monkeypatch.setattr("cascades.tasks.cascade_merge_landed.delay", pytest.fail)
    with django_capture_on_commit_callbacks(execute=True):
        land_signal(convoy, mr, "1" * 40, "1" * 40)
    assert convoy.legs.get(key="one").state == "landed"  # the convoys still followed


def test_a_conflict_is_told_to_its_rig_in_the_same_transaction():
    rig = factories.rig(state=Rig.State.MERGING)
    mr = factories.merge_request(rig=rig, state=MergeRequest.State.CONFLICTED, conflicts=["a.py"])
    after = last_event_id()
    with transaction.atomic():
        signals.merge_request_state_changed.send(
            sender=MergeRequest, merge_request=mr, old_state="merging", new_state="conflicted"
        )
        # a bead to resolve it, and the notification, before the transaction ends
        assert Notification.objects.get(rig=rig).kind == Notification.Kind.MERGE_CONFLICTED
    assert [k for k, _ in new_events(after)] == ["bead.created", "notification.new"]


def test_other_merge_request_states_are_told_nothing(django_assert_num_queries):
    rig = factories.rig(state=Rig.State.MERGING)
    mr = factories.merge_request(rig=rig, state=MergeRequest.State.QUEUED)
    with django_assert_num_queries(0):
        assert cascade_merge_refused(merge_request=mr) is None
    assert not Notification.objects.exists()
