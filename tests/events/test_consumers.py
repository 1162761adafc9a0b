"""The events websocket: auth, group subscription, live delivery and replay after reconnect."""

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import transaction

from events.kinds import kind_register
from events.services import event_append
from gastown_site.asgi import application
from tests import factories

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


def communicator(path, user=None):
    comm = WebsocketCommunicator(application, path, headers=[(b"origin", b"http://127.0.0.1")])
    if user is not None:
        comm.scope["user"] = user
    return comm


@pytest.fixture
def user(django_user_model):
    from django.contrib.auth.models import Group

    user = django_user_model.objects.create_user("viewer", password="pw-123456789")
    user.groups.add(Group.objects.get_or_create(name="viewer")[0])
    return user


@sync_to_async
def append(kind, **kw):
    kind_register(kind, "a test event")
    with transaction.atomic():
        return event_append(kind, {"n": kind}, **kw)


async def test_anonymous_is_refused(redis_server):
    comm = communicator("/ws/events/")
    connected, code = await comm.connect()
    assert not connected and code == 4401


async def test_live_event_reaches_subscribed_group_only(redis_server, user):
    convoy = await sync_to_async(factories.convoy)()
    other = await sync_to_async(factories.convoy)()
    comm = communicator(f"/ws/events/?groups=convoy.{convoy.id}", user)
    assert (await comm.connect())[0]
    assert (await comm.receive_json_from(timeout=5))["type"] == "ready"
    await append("elsewhere", convoy_id=other.id)
    await append("here", convoy_id=convoy.id)
    message = await comm.receive_json_from(timeout=5)
    assert message["event"]["kind"] == "here"
    await comm.disconnect()


async def test_reconnect_replays_missed_events(redis_server, user):
    rig = await sync_to_async(factories.rig)()
    first = await append("one", rig_id=rig.id)
    await append("two", rig_id=rig.id)
    await append("three", rig_id=rig.id)
    await append("unrelated")
    comm = communicator(f"/ws/events/?groups=rig.{rig.id}&after={first.id}", user)
    assert (await comm.connect())[0]
    kinds = [(await comm.receive_json_from(timeout=5)) for _ in range(3)]
    assert [m.get("event", {}).get("kind") for m in kinds[:2]] == ["two", "three"]
    assert all(m.get("replayed") for m in kinds[:2])
    assert kinds[2]["type"] == "ready"
    await comm.disconnect()


async def test_bad_group_names_are_ignored(redis_server, user):
    comm = communicator("/ws/events/?groups=evil;rm,convoy.x", user)
    connected, code = await comm.connect()
    assert not connected and code == 4400


async def test_an_event_in_several_subscribed_groups_arrives_once(redis_server, user):
    rig = await sync_to_async(factories.rig)()
    convoy = await sync_to_async(factories.convoy)()
    comm = communicator(f"/ws/events/?groups=board,convoy.{convoy.id},rig.{rig.id}", user)
    assert (await comm.connect())[0]
    assert (await comm.receive_json_from(timeout=5))["type"] == "ready"
    both = await append("both", convoy_id=convoy.id, rig_id=rig.id)
    after = await append("after", rig_id=rig.id)
    assert (await comm.receive_json_from(timeout=5))["event"]["id"] == both.id
    assert (await comm.receive_json_from(timeout=5))["event"]["id"] == after.id
    assert await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()


async def test_dropped_connection_reconnects_and_misses_nothing(redis_server, user):
    """A page keeps the last id it saw; after a drop it reconnects with `after=<id>` and gets
    what happened meanwhile from the log, then live events again."""
    convoy = await sync_to_async(factories.convoy)()
    path = f"/ws/events/?groups=convoy.{convoy.id}"
    comm = communicator(f"{path}&after=0", user)
    assert (await comm.connect())[0]
    assert (await comm.receive_json_from(timeout=5))["type"] == "ready"
    seen = (await append("before-drop", convoy_id=convoy.id)).id
    assert (await comm.receive_json_from(timeout=5))["event"]["id"] == seen
    await comm.disconnect()  # the connection drops

    missed = [(await append(f"missed-{n}", convoy_id=convoy.id)).id for n in range(3)]
    comm = communicator(f"{path}&after={seen}", user)
    assert (await comm.connect())[0]
    replayed = [await comm.receive_json_from(timeout=5) for _ in missed]
    assert [m["event"]["id"] for m in replayed] == missed
    assert all(m["replayed"] for m in replayed)
    assert (await comm.receive_json_from(timeout=5))["type"] == "ready"
    live = await append("live-again", convoy_id=convoy.id)
    message = await comm.receive_json_from(timeout=5)
    assert message["event"]["id"] == live.id and "replayed" not in message
    await comm.disconnect()


async def test_replay_pages_through_a_long_absence(redis_server, user, monkeypatch):
    from events import consumers

    monkeypatch.setattr(consumers, "REPLAY_PAGE", 2)
    rig = await sync_to_async(factories.rig)()
    ids = [(await append(f"e{n}", rig_id=rig.id)).id for n in range(5)]
    comm = communicator(f"/ws/events/?groups=rig.{rig.id}&after=0", user)
    assert (await comm.connect())[0]
    got = [(await comm.receive_json_from(timeout=5))["event"]["id"] for _ in ids]
    assert got == ids
    assert (await comm.receive_json_from(timeout=5))["type"] == "ready"
    await comm.disconnect()


async def test_a_convoy_page_may_listen_to_its_convoy_and_many_rigs(redis_server, user):
    groups = ",".join(["convoy.1", *[f"rig.{n}" for n in range(1, 41)]])
    comm = communicator(f"/ws/events/?groups={groups}", user)
    assert (await comm.connect())[0]
    ready = await comm.receive_json_from(timeout=5)
    assert ready["type"] == "ready" and len(ready["groups"]) == 41
    await comm.disconnect()
