"""notification_send: deduplication by fingerprint, notify levels, the board's events."""

import pytest

from events.models import Event
from notifications.models import Notification
from notifications.services import (
    notification_ack,
    notification_fingerprint,
    notification_send,
    notifications_ack,
)
from rigs.models import Rig
from tests import factories

pytestmark = pytest.mark.django_db

K, Sev = Notification.Kind, Notification.Severity


def send(rig, **kw):
    kw.setdefault("kind", K.INTERFACE_CHANGED)
    kw.setdefault("severity", Sev.WARNING)
    kw.setdefault("summary", "auth/tokens.py: make_token changed")
    return notification_send(rig=rig, **kw)


def test_identical_unacked_notifications_merge():
    rig = factories.rig()
    first = send(rig, changes={"b": 1, "a": [1, 2]})
    again = send(rig, changes={"a": [1, 2], "b": 1})  # same content, other key order
    assert again.pk == first.pk and again.occurrences == 2
    assert Notification.objects.count() == 1
    kinds = list(Event.objects.filter(rig_id=rig.pk).values_list("kind", flat=True))
    assert kinds == ["notification.new", "notification.repeated"]
    assert send(rig, changes={"a": [1, 2], "b": 2}).pk != first.pk  # other changes: new one
    notification_ack(notification=first)
    assert send(rig, changes={"b": 1, "a": [1, 2]}).pk != first.pk  # acked: a fresh one


def test_fingerprint_covers_rig_kind_summary_action_and_changes():
    base = dict(rig_id=1, kind="info", summary="s", action="a", changes={"x": 1})
    fp = notification_fingerprint(**base)
    for name, value in [("rig_id", 2), ("kind", "merged"), ("summary", "t"), ("action", "b"),
                        ("changes", {"x": 2})]:  # fmt: skip
        assert notification_fingerprint(**{**base, name: value}) != fp


@pytest.mark.parametrize(
    ("level", "pushed"),
    [
        (Rig.NotifyLevel.ALL, {Sev.INFO, Sev.WARNING, Sev.CRITICAL}),
        (Rig.NotifyLevel.IMPORTANT, {Sev.WARNING, Sev.CRITICAL}),
        (Rig.NotifyLevel.MUTED, set()),
    ],
)
def test_notify_level_decides_what_is_pushed_but_all_is_stored(level, pushed):
    rig = factories.rig(notify_level=level)
    for severity in Sev.values:
        send(rig, severity=severity, summary=f"{severity} news")
    assert Notification.objects.filter(rig=rig).count() == 3
    events = Event.objects.filter(rig_id=rig.pk, kind="notification.new")
    assert {e.payload["severity"] for e in events} == pushed


def test_event_names_the_convoy_the_caller_gives():
    """Notifications know rigs, not convoys: the caller (a convoy's service, a cascade, the
    runner) names the rig's convoy for the event; none given, the event names none."""
    rig = factories.rig()
    leg = factories.leg(rig=rig)
    send(rig, convoy_id=leg.convoy_id)
    send(rig, summary="no convoy named")
    with_convoy, without = Event.objects.filter(kind="notification.new").order_by("id")
    assert (with_convoy.rig_id, with_convoy.convoy_id, with_convoy.repository_id) == (
        rig.id,
        leg.convoy_id,
        rig.repository_id,
    )
    assert without.convoy_id is None


def test_archived_rig_gets_nothing_and_bad_kinds_are_refused():
    assert send(factories.rig(state=Rig.State.ARCHIVED)) is None
    with pytest.raises(ValueError, match="unknown notification kind"):
        send(factories.rig(), kind="gossip")


def test_notifications_ack_acks_the_unacked_with_one_event_each():
    rig = factories.rig(state=Rig.State.WORKING)
    first = factories.notification(rig=rig, summary="one")
    second = factories.notification(rig=rig, summary="two")
    notification_ack(notification=first)
    first.refresh_from_db()
    acked_at = first.acked_at
    after = Event.objects.order_by("-id").values_list("id", flat=True).first() or 0
    assert notifications_ack(notifications=Notification.objects.filter(rig=rig)) == 1
    assert [(e.kind, e.payload) for e in Event.objects.filter(pk__gt=after)] == [
        ("notification.acked", {"notification": second.id})
    ]
    first.refresh_from_db()
    assert first.acked_at == acked_at  # acking twice keeps the first time
    assert notifications_ack(notifications=Notification.objects.filter(rig=rig)) == 0
