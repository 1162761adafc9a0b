"""The event log's broadcast: after commit, one batch per transaction, never a rolled-back row."""

import pytest
from django.db import transaction

from convoys import events
from convoys.events import event_append
from convoys.models import Event

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def pushed(monkeypatch):
    batches = []
    monkeypatch.setattr(events, "events_broadcast", lambda batch: batches.append(batch))
    return batches


def test_one_batch_per_transaction_after_commit(pushed):
    with transaction.atomic():
        for i in range(3):
            event_append("x", {"i": i})
        assert pushed == []
    assert [[e.payload["i"] for e in batch] for batch in pushed] == [[0, 1, 2]]


def test_rolled_back_savepoint_events_are_not_pushed(pushed):
    with transaction.atomic():
        event_append("kept")
        try:
            with transaction.atomic():
                event_append("discarded")
                raise RuntimeError
        except RuntimeError:
            pass
        event_append("kept too")
    assert [e.kind for e in pushed[0]] == ["kept", "kept too"]
    assert not Event.objects.filter(kind="discarded").exists()


def test_rolled_back_transaction_pushes_nothing_and_next_one_does(pushed):
    with pytest.raises(RuntimeError), transaction.atomic():
        event_append("lost")
        raise RuntimeError
    with transaction.atomic():
        event_append("next")
    assert [[e.kind for e in batch] for batch in pushed] == [["next"]]


def test_outside_a_transaction_it_is_pushed_at_once(pushed):
    event_append("now")
    assert [[e.kind for e in batch] for batch in pushed] == [["now"]]
