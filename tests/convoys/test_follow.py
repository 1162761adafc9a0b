"""The services behind `convoys.receivers` (`convoys.services.follow`), each with the exact
events it appends, and the batched convoy rollup that the single one calls."""

import pytest
from django.db import transaction

from convoys import services
from convoys.models import Leg
from convoys.selectors import convoy_rollup, convoys_rollups, rig_current_leg, rigs_current_legs
from events.models import Event
from notifications.models import Notification
from rigs.models import MergeRequest, Rig
from tests import factories

pytestmark = pytest.mark.django_db


def new_events(after: int) -> list[tuple[str, dict]]:
    return [(e.kind, e.payload) for e in Event.objects.filter(pk__gt=after).order_by("id")]


def last_event_id() -> int:
    return Event.objects.order_by("-id").values_list("id", flat=True).first() or 0


def two_leg_convoy(**kw):
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
        **kw,
    )
    services.convoy_launch(convoy=convoy)
    return convoy, a, b


def test_follow_merge_landed_lands_the_leg_and_dispatches_the_next():
    convoy, a, b = two_leg_convoy()
    mr = factories.merge_request(rig=a, target_branch="main", state=MergeRequest.State.MERGED)
    after = last_event_id()
    moved = services.convoys_follow_merge_landed(
        merge_requests=[mr], repository=convoy.repository, target_branch="main"
    )
    assert [c.pk for c in moved] == [convoy.pk]
    [one, two] = convoy.legs.order_by("position")
    assert new_events(after) == [
        ("leg.state", {"leg": one.id, "key": "one", "from": "ready", "to": "landed"}),
        ("leg.state", {"leg": two.id, "key": "two", "from": "pending", "to": "ready"}),
        ("notification.new", Event.objects.get(kind="notification.new", rig_id=b.id).payload),
    ]
    assert Notification.objects.get(rig=b).kind == Notification.Kind.UNBLOCKED


def test_follow_merge_landed_on_another_target_lands_nothing():
    convoy, a, _ = two_leg_convoy()
    mr = factories.merge_request(rig=a, target_branch="release", state=MergeRequest.State.MERGED)
    after = last_event_id()
    moved = services.convoys_follow_merge_landed(
        merge_requests=[mr],
        repository=convoy.repository,
        target_branch="release",  # not the leg's merge target: nothing lands
    )
    assert moved == [] and new_events(after) == []


def test_follow_rig_state_moves_the_leg_with_its_rig():
    convoy, a, _ = two_leg_convoy()
    one = convoy.legs.get(key="one")
    after = last_event_id()
    leg = services.convoys_follow_rig_state(rig=a, old_state="ready", new_state="working")
    assert leg == one
    [told] = Notification.objects.filter(rig=a, topic=f"leg:{one.id}")
    assert new_events(after) == [
        ("leg.state", {"leg": one.id, "key": "one", "from": "ready", "to": "working"}),
        # "start leg one" is answered: it started
        (
            "notification.resolved",
            {
                "notification": told.id,
                "rig": a.id,
                "kind": "assigned",
                "resolution": "leg one started",
            },
        ),
    ]
    # a rig just recorded (no old state) has no leg to move
    after = last_event_id()
    assert services.convoys_follow_rig_state(rig=a, old_state="", new_state="ready") is None
    assert new_events(after) == []


def test_follow_merge_request_blocks_a_convoy_whose_landing_failed():
    convoy, a, b = two_leg_convoy(use_integration_branch=True, slug="two")
    for rig in (a, b):
        mr = factories.merge_request(
            rig=rig, target_branch="convoy/two", state=MergeRequest.State.MERGED
        )
        services.convoys_follow_merge_landed(
            merge_requests=[mr], repository=convoy.repository, target_branch="convoy/two"
        )
    convoy.refresh_from_db()
    landing = convoy.landing_merge_request
    assert convoy.state == "landing" and landing is not None
    landing.state = MergeRequest.State.FAILED
    landing.save()
    after = last_event_id()
    services.convoys_follow_merge_request(merge_request=landing, new_state="failed")
    convoy.refresh_from_db()
    assert convoy.state == "blocked"
    [(kind, payload)] = new_events(after)
    assert kind == "convoy.state" and (payload["from"], payload["to"]) == ("landing", "blocked")


def test_receivers_append_no_rig_events_of_their_own():
    """rig.* and merge_request.* events are the rigs' own (their services append them); the
    convoys' receivers only move legs and convoys."""
    from rigs import signals

    rig = factories.rig(state=Rig.State.READY)
    after = last_event_id()
    with transaction.atomic():
        signals.rig_progress.send(sender=Rig, rig=rig)
        signals.branch_updated.send(
            sender=Rig, rig=rig, old_head="a" * 40, new_head="b" * 40, changed_files=[]
        )
        signals.rig_state_changed.send(
            sender=Rig, rig=rig, old_state="ready", new_state="working", reason=""
        )
    assert new_events(after) == []


# --- the rollup: one core, single and batched ------------------------------------------------


def test_batched_rollups_equal_the_single_one_in_three_queries(django_assert_num_queries):
    convoys = [
        two_leg_convoy(use_integration_branch=bool(n % 2), slug=f"c{n}")[0] for n in range(4)
    ]
    convoys.append(factories.convoy())  # no legs
    with django_assert_num_queries(2):  # legs, edges (no landing merge request to read)
        batched = convoys_rollups(convoys)
    for convoy in convoys:
        assert batched[convoy.id] == convoy_rollup(convoy)
    assert convoys_rollups([]) == {}


def test_current_leg_single_calls_the_batched(django_assert_num_queries):
    _, a, b = two_leg_convoy()
    with django_assert_num_queries(1):
        legs = rigs_current_legs([a.id, b.id], dependencies=False)
    assert {rig: leg.key for rig, leg in legs.items()} == {a.id: "one", b.id: "two"}
    assert rig_current_leg(a) == legs[a.id] and rig_current_leg(b.id) == legs[b.id]
    assert rig_current_leg(None) is None
    Leg.objects.filter(rig=a).update(state=Leg.State.LANDED)
    assert rig_current_leg(a) is None
