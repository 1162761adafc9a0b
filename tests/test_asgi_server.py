"""The real ASGI server and worker processes share the test database and live channel."""

import asyncio
import json
import urllib.request

import pytest
from django.db import transaction

from events.kinds import kind_register
from events.services import event_append

kind_register("test.ping", "a test event")


def test_asgi_server_serves_pages_and_live_events(asgi_server, admin_user):
    with urllib.request.urlopen(f"{asgi_server}/healthz") as response:
        assert json.load(response)["status"] == "ok"
    with urllib.request.urlopen(f"{asgi_server}/api/schema/") as response:
        assert b"openapi" in response.read()


@pytest.mark.django_db(transaction=True)
def test_committed_event_reaches_channel_group(redis_server):
    """An event is broadcast to its groups once its transaction commits."""
    from channels.layers import get_channel_layer

    async def listen():
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add("board", channel)
        loop = asyncio.get_running_loop()

        def append():
            with transaction.atomic():
                event_append("test.ping", {"n": 1})

        await loop.run_in_executor(None, append)
        message = await asyncio.wait_for(layer.receive(channel), timeout=5)
        return message

    message = asyncio.run(listen())
    assert [e["kind"] for e in message["events"]] == ["test.ping"]
