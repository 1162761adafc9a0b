"""Notices are states: one open notice per rig and topic, updated in place (history kept),
resolved by what answers it or acknowledged; identical topic-less notices still merge."""

import pytest

from events.models import Event
from notifications.models import Notification, Webhook
from notifications.selectors import notices_open
from notifications.services import (
    notices_resolve,
    notification_ack,
    notification_send,
    notifications_send_many,
)
from notifications.webhooks import WebhookDelivery
from tests import factories

pytestmark = pytest.mark.django_db

K, Sev = Notification.Kind, Notification.Severity


def base(rig, behind: int, **kw):
    kw.setdefault("kind", K.BASE_MOVED)
    kw.setdefault("severity", Sev.INFO)
    return notification_send(
        rig=rig,
        topic="base",
        summary=f"{behind} commit(s) behind main",
        changes={"behind": behind},
        **kw,
    )


def kinds(rig) -> list[str]:
    return list(Event.objects.filter(rig_id=rig.pk).order_by("id").values_list("kind", flat=True))


def test_a_topic_notice_is_updated_in_place_with_its_history():
    rig = factories.rig()
    first = base(rig, 1)
    for behind in range(2, 11):
        again = base(rig, behind)
        assert again.pk == first.pk
    notice = Notification.objects.get()
    assert (notice.state, notice.summary, notice.changes) == (
        "open",
        "10 commit(s) behind main",
        {"behind": 10},
    )
    assert [r["summary"] for r in notice.revisions][:2] == [
        "1 commit(s) behind main",
        "2 commit(s) behind main",
    ]
    assert len(notice.revisions) == 9 and notice.occurrences == 10
    assert kinds(rig) == ["notification.new"] + ["notification.updated"] * 9


def test_an_unchanged_topic_notice_is_left_alone():
    rig = factories.rig()
    first = base(rig, 3)
    assert base(rig, 3).pk == first.pk
    first.refresh_from_db()
    assert (first.occurrences, first.revisions) == (1, [])
    assert kinds(rig) == ["notification.new"]


def test_a_topic_notice_changes_kind_and_severity_in_place_and_webhooks_hear_escalations():
    rig = factories.rig()
    Webhook.objects.create(repository=rig.repository, url="https://hooks.example.com/x")
    first = base(rig, 1)
    base(rig, 2)  # a count changed: no webhook
    escalated = base(rig, 3, kind=K.REBASE_NEEDED, severity=Sev.WARNING)
    assert escalated.pk == first.pk and escalated.kind == K.REBASE_NEEDED
    assert WebhookDelivery.objects.filter(notification=first).count() == 2  # new + escalated


def test_resolving_closes_it_and_the_next_cause_opens_a_new_one():
    rig = factories.rig()
    first = base(rig, 2)
    assert notices_resolve(notifications=Notification.objects.filter(rig=rig), resolution="ok")
    first.refresh_from_db()
    assert (first.state, first.resolution) == ("resolved", "ok")
    assert first.resolved_at is not None and first.acked_at is None
    assert notices_resolve(notifications=Notification.objects.filter(rig=rig), resolution="x") == 0
    second = base(rig, 1)
    assert second.pk != first.pk and second.state == "open"
    assert kinds(rig) == ["notification.new", "notification.resolved", "notification.new"]
    notification_ack(notification=second)
    second.refresh_from_db()
    assert second.state == "acknowledged" and second.acked_at is not None
    notification_ack(notification=first)  # a resolved notice stays resolved
    first.refresh_from_db()
    assert first.state == "resolved"


def test_one_open_notice_per_topic_in_a_batch_and_topicless_ones_merge():
    rig, other = factories.rig(), factories.rig()
    items = [
        {"rig": rig, "kind": K.BASE_MOVED, "severity": Sev.INFO, "summary": "a", "topic": "base"},
        {"rig": rig, "kind": K.BASE_MOVED, "severity": Sev.INFO, "summary": "b", "topic": "base"},
        {"rig": other, "kind": K.INFO, "severity": Sev.INFO, "summary": "hello"},
        {"rig": other, "kind": K.INFO, "severity": Sev.INFO, "summary": "hello"},
    ]
    sent = notifications_send_many(items)
    assert sent[0].pk == sent[1].pk and sent[0].summary == "b"
    assert sent[2].pk == sent[3].pk and sent[2].occurrences == 2
    assert Notification.objects.filter(state="open").count() == 2
    assert notices_open(rig_ids=[rig.pk], topics=["base"]) == {rig.pk: {"base": sent[0]}}


def test_the_database_allows_one_open_notice_per_topic():
    from django.db import IntegrityError, transaction

    rig = factories.rig()
    first = base(rig, 1)
    with pytest.raises(IntegrityError), transaction.atomic():
        Notification.objects.create(
            rig=rig, kind=K.BASE_MOVED, summary="dup", topic="base", fingerprint=first.fingerprint
        )
