"""The events websocket: auth, group subscription, live delivery and replay after reconnect."""

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import transaction

from convoys.events import event_append
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
    return django_user_model.objects.create_user("viewer", password="pw-123456789")


@sync_to_async
def append(kind, **kw):
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
