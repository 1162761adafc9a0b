"""GET /api/v1/beads/?rig=&ready=true: the ready selector through DRF."""

import pytest
from rest_framework.test import APIClient

from convoys import services
from rigs.models import Rig
from rigs.services import agent_create
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def agent_client():
    _, token = agent_create(name="bot")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def test_ready_beads_of_a_rig(agent_client, django_assert_max_num_queries):
    rig = factories.rig(state=Rig.State.READY)
    blocker = services.bead_create(title="blocker", rig=rig, priority=1)
    task = services.bead_create(title="task", rig=rig, priority=0)
    services.bead_create(title="elsewhere", rig=factories.rig())
    services.bead_dependency_add(bead=task, depends_on=blocker)
    # token lookup, the ready ids, the page
    with django_assert_max_num_queries(3):
        response = agent_client.get(f"/api/v1/beads/?rig={rig.id}&ready=true")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["count"] == 1
    [bead] = body["results"]
    assert bead["short_id"] == blocker.short_id and bead["status"] == "open"
    assert set(bead) >= {"id", "rig", "leg", "repository", "title", "status", "priority", "type",
                         "assignee", "defer_until", "labels"}  # fmt: skip
    all_beads = agent_client.get(f"/api/v1/beads/?rig={rig.id}").json()
    assert [b["title"] for b in all_beads["results"]] == ["task", "blocker"]


def test_bad_parameters_are_a_400_naming_the_field(agent_client):
    response = agent_client.get("/api/v1/beads/?rig=abc")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "rig"
    response = agent_client.get("/api/v1/beads/?status=done")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "status"
    response = agent_client.get("/api/v1/beads/?ready=maybe")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "ready"


def test_anonymous_is_refused():
    assert APIClient().get("/api/v1/beads/").status_code in (401, 403)


def test_pages_keep_the_ready_order(agent_client):
    rig = factories.rig(state=Rig.State.READY)
    beads = [services.bead_create(title=f"b{n}", rig=rig, priority=n % 5) for n in range(7)]
    expected = [b.short_id for b in sorted(beads, key=lambda b: (b.priority, b.created_at, b.id))]
    seen = []
    for offset in range(0, 7, 3):
        body = agent_client.get(f"/api/v1/beads/?rig={rig.id}&ready=true&limit=3&offset={offset}")
        assert body.json()["count"] == 7
        seen += [b["short_id"] for b in body.json()["results"]]
    assert seen == expected
