"""The event log's broadcast: after commit, one batch per transaction, never a rolled-back row."""

import pytest
from django.db import transaction

from events import services as events
from events.models import Event
from events.services import event_append

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def pushed(monkeypatch):
    batches = []
    monkeypatch.setattr(events, "events_broadcast", lambda batch: batches.append(batch))
    return batches


def test_one_batch_per_transaction_after_commit(pushed):
    with transaction.atomic():
        for i in range(3):
            event_append("bead.updated", {"i": i})
        assert pushed == []
    assert [[e.payload["i"] for e in batch] for batch in pushed] == [[0, 1, 2]]


def test_rolled_back_savepoint_events_are_not_pushed(pushed):
    with transaction.atomic():
        event_append("bead.created")
        try:
            with transaction.atomic():
                event_append("bead.status")
                raise RuntimeError
        except RuntimeError:
            pass
        event_append("rig.progress")
    assert [e.kind for e in pushed[0]] == ["bead.created", "rig.progress"]
    assert not Event.objects.filter(kind="bead.status").exists()


def test_rolled_back_transaction_pushes_nothing_and_next_one_does(pushed):
    with pytest.raises(RuntimeError), transaction.atomic():
        event_append("bead.status")
        raise RuntimeError
    with transaction.atomic():
        event_append("leg.state")
    assert [[e.kind for e in batch] for batch in pushed] == [["leg.state"]]


def test_outside_a_transaction_it_is_pushed_at_once(pushed):
    event_append("convoy.state")
    assert [[e.kind for e in batch] for batch in pushed] == [["convoy.state"]]


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match=r"register it in events/kinds\.py"):
        event_append("no.such_kind")
