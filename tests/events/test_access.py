"""Who reads which events (issue 15 items 4 and 5), on the API and the websocket, and frames the
websocket cannot read (an error frame, the connection stays open). Real ASGI application."""

import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Group
from django.db import transaction
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from convoys.models import Leg
from events.services import event_append
from gastown_site.asgi import application
from rigs import services as rig_services
from rigs.auth import AgentUser
from tests import factories

pytestmark = [pytest.mark.django_db(transaction=True)]


def communicator(path, user):
    comm = WebsocketCommunicator(application, path, headers=[(b"origin", b"http://127.0.0.1")])
    comm.scope["user"] = user
    return comm


def notify(rig, convoy, text: str):
    with transaction.atomic():
        return event_append(
            "notification.new",
            {"notification": 1, "rig": rig.id, "kind": "info", "summary": text, "action": text},
            repository_id=rig.repository_id,
            convoy_id=convoy.id,
            rig_id=rig.id,
        )


@pytest.fixture
def town(django_user_model):
    """Agent A works in convoy C (rig a); agent B has rig b in the same convoy and rig b2 in
    another convoy D; a no-role login and a viewer."""
    agent_a, token_a = rig_services.agent_create(name="agent-a")
    agent_b, _ = rig_services.agent_create(name="agent-b")
    rig_a = factories.rig(agent=agent_a)
    rig_b = factories.rig(agent=agent_b, repository=rig_a.repository)
    rig_b2 = factories.rig(agent=agent_b, repository=rig_a.repository)
    convoy_c = factories.convoy(repository=rig_a.repository)
    convoy_d = factories.convoy(repository=rig_a.repository)
    Leg.objects.create(convoy=convoy_c, key="a", title="A", rig=rig_a)
    Leg.objects.create(convoy=convoy_c, key="b", title="B", rig=rig_b)
    Leg.objects.create(convoy=convoy_d, key="b2", title="B2", rig=rig_b2)
    nobody = django_user_model.objects.create_user("nobody", password="pw-123456789")
    viewer = django_user_model.objects.create_user("watcher", password="pw-123456789")
    viewer.groups.add(Group.objects.get_or_create(name="viewer")[0])
    return {
        "agent_a": agent_a,
        "token_a": token_a,
        "rig_a": rig_a,
        "rig_b": rig_b,
        "rig_b2": rig_b2,
        "convoy_c": convoy_c,
        "convoy_d": convoy_d,
        "nobody": nobody,
        "viewer": viewer,
    }


def test_an_agent_reads_its_own_and_its_convoys_events_without_others_notification_text(town):
    mine = notify(town["rig_a"], town["convoy_c"], "for a: secret plan A")
    neighbour = notify(town["rig_b"], town["convoy_c"], "for b: secret plan B")
    elsewhere = notify(town["rig_b2"], town["convoy_d"], "for b2: secret plan D")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {town['token_a']}")
    rows = {row["id"]: row for row in client.get("/api/v1/events/").json()["results"]}
    assert rows[mine.id]["payload"]["summary"] == "for a: secret plan A"
    assert neighbour.id in rows and "summary" not in rows[neighbour.id]["payload"]
    assert elsewhere.id not in rows
    # asking for another rig's events by filter gives nothing more
    other = client.get(f"/api/v1/events/?rig={town['rig_b2'].id}&kind=notification.new")
    assert other.json()["results"] == []
    assert b"secret plan B" not in client.get("/api/v1/events/").content


def test_a_neighbours_ended_turn_is_seen_without_its_reason(town):
    from convoys.services import coordination

    coordination.rig_turn_end(
        rig=town["rig_b"], status="escalated", reason="secret reason of B", by="agent-b"
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {town['token_a']}")
    rows = client.get("/api/v1/events/?kind=rig.turn_ended").json()["results"]
    assert [row["payload"]["status"] for row in rows] == ["escalated"]
    assert b"secret reason of B" not in client.get("/api/v1/events/").content


def test_a_viewer_reads_everything_and_a_no_role_login_nothing(town):
    notify(town["rig_b2"], town["convoy_d"], "visible to viewers")
    viewer = APIClient()
    viewer.force_login(town["viewer"])
    assert b"visible to viewers" in viewer.get("/api/v1/events/").content
    nobody = APIClient()
    nobody.force_login(town["nobody"])
    assert nobody.get("/api/v1/events/").status_code == 403


@pytest.mark.asyncio
async def test_the_websocket_refuses_a_login_without_a_role(town):
    comm = communicator("/ws/events/?groups=board", town["nobody"])
    connected, code = await comm.connect()
    assert not connected and code == 4403


@pytest.mark.asyncio
async def test_an_agent_may_join_only_its_own_groups(town):
    agent = AgentUser(town["agent_a"])
    rig_a, rig_b2 = town["rig_a"], town["rig_b2"]
    groups = f"board,rig.{rig_b2.id},convoy.{town['convoy_d'].id},rig.{rig_a.id}"
    comm = communicator(f"/ws/events/?groups={groups}", agent)
    assert (await comm.connect())[0]
    ready = await comm.receive_json_from(timeout=5)
    assert ready == {"type": "ready", "groups": [f"rig.{rig_a.id}"]}
    await comm.disconnect()
    only_others = communicator(f"/ws/events/?groups=board,rig.{rig_b2.id}", agent)
    connected, code = await only_others.connect()
    assert not connected and code == 4403


@pytest.mark.asyncio
async def test_an_agent_sees_a_neighbours_notification_without_its_text_live(town):
    agent = AgentUser(town["agent_a"])
    comm = communicator(f"/ws/events/?groups=convoy.{town['convoy_c'].id}", agent)
    assert (await comm.connect())[0]
    assert (await comm.receive_json_from(timeout=5))["type"] == "ready"
    await sync_to_async(notify)(town["rig_b"], town["convoy_c"], "private to b")
    message = await comm.receive_json_from(timeout=5)
    assert message["event"]["kind"] == "notification.new"
    assert "summary" not in message["event"]["payload"]
    assert "private to b" not in json.dumps(message)
    await comm.disconnect()


FRAMES = st.one_of(
    st.binary(min_size=1, max_size=64).map(lambda b: ("bytes", b)),
    st.text(min_size=1, max_size=64).map(lambda t: ("text", t)),
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False)
        | st.text(max_size=8),
        lambda children: st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=8), children, max_size=3),
        max_leaves=10,
    ).map(lambda v: ("text", json.dumps(v))),
    st.sampled_from(
        [
            ("text", json.dumps({"type": "replay", "after": "²"})),
            ("text", json.dumps({"type": "replay", "after": 2**64})),
            ("text", json.dumps({"type": "replay", "after": "9" * 5000})),
            ("text", "[" * 50_000 + "]" * 50_000),
            ("text", "x" * 10_000),
        ]
    ),
)


@hypothesis_settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(frames=st.lists(FRAMES, min_size=1, max_size=4))
def test_any_frame_gets_an_answer_and_the_connection_stays_open(town, frames):
    async def run() -> None:
        comm = communicator("/ws/events/?groups=board", town["viewer"])
        assert (await comm.connect())[0]
        assert (await comm.receive_json_from(timeout=5))["type"] == "ready"
        for kind, frame in frames:
            if kind == "bytes":
                await comm.send_to(bytes_data=frame)
            else:
                await comm.send_to(text_data=frame)
        # still open and answering: a valid replay request is served after any garbage
        await comm.send_json_to({"type": "replay", "after": 0})
        while True:
            answer = await comm.receive_json_from(timeout=5)
            assert answer["type"] in ("error", "event"), answer
            if answer["type"] == "error":
                assert set(answer["error"]) == {"code", "message", "field"}
            if answer["type"] == "event" and answer.get("replayed"):
                break
        await comm.disconnect()

    notify_once(town)
    from asgiref.sync import async_to_sync

    async_to_sync(run)()


def notify_once(town) -> None:
    if not getattr(town["rig_a"], "_notified", False):
        notify(town["rig_a"], town["convoy_c"], "hello")
        town["rig_a"]._notified = True
