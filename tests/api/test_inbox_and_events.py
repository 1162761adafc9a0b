"""Notifications (the inbox, cheap to poll) and the event log (for replay)."""

import pytest

from events.models import Event
from notifications.models import Notification
from rigs.models import Rig
from tests import factories
from tests.api.conftest import error_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def inbox(make_agent):
    agent, client = make_agent()
    rig = factories.rig(agent=agent, state=Rig.State.WORKING)
    notes = [factories.notification(rig=rig, summary=f"note {n}") for n in range(3)]
    return client, rig, notes


def test_inbox_lists_unacked_newest_first(inbox, make_agent):
    client, rig, notes = inbox
    factories.notification(rig=factories.rig(), summary="someone else's")
    body = client.get(f"/api/v1/notifications/?rig={rig.id}&unacked=true").json()
    assert [n["id"] for n in body["results"]] == [n.id for n in reversed(notes)]
    assert set(body["results"][0]) >= {"id", "rig", "kind", "severity", "summary", "action",
                                       "changes", "cascade", "depth", "acked_at"}  # fmt: skip
    # without ?rig= an agent sees its own rigs' notifications only
    assert client.get("/api/v1/notifications/").json()["count"] == 3
    response = client.get(f"/api/v1/notifications/?rig={factories.rig().id}")
    assert response.status_code == 403


def test_etag_and_since_make_polling_cheap(inbox, django_assert_max_num_queries):
    client, rig, notes = inbox
    url = f"/api/v1/notifications/?rig={rig.id}&unacked=true"
    first = client.get(url)
    etag = first["ETag"]
    assert etag.startswith('W/"')
    # token, rig ownership, one aggregate
    with django_assert_max_num_queries(3):
        again = client.get(url, HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304 and not again.content
    Notification.objects.filter(pk=notes[0].pk).update(occurrences=2)  # no updated_at change
    assert client.get(url, HTTP_IF_NONE_MATCH=etag).status_code == 304
    newer = factories.notification(rig=rig, summary="new")
    changed = client.get(url, HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200 and changed["ETag"] != etag
    assert client.get(url + "&limit=1", HTTP_IF_NONE_MATCH=changed["ETag"]).status_code == 200

    since = changed["X-Since"]
    assert client.get(url, {"since": since}).json()["count"] == 0
    later = factories.notification(rig=rig, summary="later")
    body = client.get(url, {"since": since}).json()
    assert [n["id"] for n in body["results"]] == [later.id]
    assert newer.id not in [n["id"] for n in body["results"]]
    for bad in ("yesterday", "2026-13-40T00:00:00Z"):
        response = client.get(url, {"since": bad})
        assert response.status_code == 400 and error_of(response)["field"] == "since"


def test_ack_one_and_all(inbox, make_agent, operator):
    client, rig, notes = inbox
    _, stranger = make_agent("stranger")
    url = f"/api/v1/notifications/{notes[0].id}/ack/"
    assert stranger.post(url).status_code == 403
    response = client.post(url)
    assert response.status_code == 200 and response.json()["acked_at"]
    first_ack = response.json()["acked_at"]
    assert client.post(url).json()["acked_at"] == first_ack  # twice keeps the first time
    assert client.get(f"/api/v1/notifications/?rig={rig.id}&unacked=true").json()["count"] == 2
    assert client.post("/api/v1/notifications/999999/ack/").status_code == 404

    assert (
        stranger.post("/api/v1/notifications/ack/", {"rig": rig.id}, format="json").status_code
        == 403
    )
    response = client.post("/api/v1/notifications/ack/", {"rig": rig.id}, format="json")
    assert response.status_code == 200 and response.json() == {"acked": 2}
    assert not Notification.objects.filter(rig=rig, state="open").exists()
    factories.notification(rig=rig)
    assert client.post("/api/v1/notifications/ack/", {}, format="json").json() == {"acked": 1}
    response = operator.post("/api/v1/notifications/ack/", {}, format="json")
    assert response.status_code == 400 and error_of(response)["field"] == "rig"
    assert operator.post(url).status_code == 200


def test_events_replay_by_id(viewer, make_agent, django_assert_max_num_queries):
    convoy = factories.convoy()
    rig = factories.rig()
    events = [factories.event(kind="a", convoy=convoy) for _ in range(5)]
    events += [factories.event(kind="b", rig=rig) for _ in range(5)]
    with django_assert_max_num_queries(4):
        body = viewer.get("/api/v1/events/?limit=4").json()
    assert [e["id"] for e in body["results"]] == [e.id for e in events[:4]]
    assert body["last_id"] == events[3].id and f"after={events[3].id}" in body["next"]
    rest = viewer.get(body["next"]).json()
    assert [e["id"] for e in rest["results"]] == [e.id for e in events[4:8]]
    end = viewer.get(f"/api/v1/events/?after={events[-1].id}").json()
    assert end == {"next": None, "last_id": events[-1].id, "results": []}
    assert viewer.get(f"/api/v1/events/?convoy={convoy.id}").json()["results"][0]["kind"] == "a"
    assert len(viewer.get(f"/api/v1/events/?rig={rig.id}&kind=b").json()["results"]) == 5
    assert viewer.get("/api/v1/events/?kind=zzz").json()["results"] == []
    for query in ("after=x", "after=-1", "rig=1e3", "limit=lots"):
        response = viewer.get(f"/api/v1/events/?{query}")
        assert response.status_code == 400, query
        assert error_of(response)["field"] == query.split("=")[0]
    _, agent = make_agent()
    assert agent.get("/api/v1/events/").status_code == 200
    assert Event.objects.count() == 10
