"""Bad input anywhere is a 4xx with the one error body, never a 500."""

import pytest

from convoys import services
from rigs.models import Rig
from tests import factories
from tests.api.conftest import error_of

pytestmark = pytest.mark.django_db

HUGE = 10**30


@pytest.fixture
def world(make_agent):
    agent, client = make_agent()
    rig = factories.rig(agent=agent, state=Rig.State.WORKING)
    bead = services.bead_create(title="b", rig=rig)
    note = factories.notification(rig=rig)
    convoy = factories.convoy(repository=rig.repository)
    return client, rig, bead, note, convoy


def post_urls(rig, bead, note, convoy) -> list[str]:
    """The POSTs that read a body (heartbeat, sync, launch, ack of one take none)."""
    return [
        "/api/v1/repositories/",
        "/api/v1/rigs/",
        f"/api/v1/rigs/{rig.id}/teardown/",
        f"/api/v1/rigs/{rig.id}/merge-requests/",
        "/api/v1/convoys/",
        f"/api/v1/convoys/{convoy.id}/cancel/",
        "/api/v1/beads/",
        f"/api/v1/beads/{bead.short_id}/claim/",
        f"/api/v1/beads/{bead.short_id}/close/",
        f"/api/v1/beads/{bead.short_id}/dependencies/",
        "/api/v1/notifications/ack/",
    ]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"[1, 2", "application/json"),
        (b"\xff\xfe\x00", "application/json"),
        (b"null", "application/json"),
        (b"[]", "application/json"),
        (b'"a string"', "application/json"),
        (b"42", "application/json"),
        (b'{"a": 1}', "application/xml"),
        (b"x=1", "text/plain"),
    ],
)
def test_non_json_bodies_are_4xx(world, operator, body, content_type):
    client, rig, bead, note, convoy = world
    for caller in (client, operator):
        for url in post_urls(rig, bead, note, convoy):
            response = caller.generic("POST", url, body, content_type=content_type)
            assert 400 <= response.status_code < 500, (url, body, response.status_code)
            assert error_of(response)


def test_wrong_types_and_huge_numbers_in_bodies(world, operator):
    client, rig, bead, _, _ = world
    cases = [
        ("/api/v1/beads/", {"title": ["x"], "rig": rig.id}),
        ("/api/v1/beads/", {"title": {"a": 1}, "rig": rig.id}),
        ("/api/v1/beads/", {"title": "x", "rig": HUGE}),
        ("/api/v1/beads/", {"title": "x", "rig": -HUGE}),
        ("/api/v1/beads/", {"title": "x", "rig": 1.5}),
        ("/api/v1/beads/", {"title": "x", "rig": rig.id, "priority": HUGE}),
        ("/api/v1/beads/", {"title": "x", "rig": rig.id, "blocks": [HUGE]}),
        ("/api/v1/beads/", {"title": "x", "rig": rig.id, "labels": [None]}),
        ("/api/v1/beads/", {"title": "x\x00y", "rig": rig.id}),
        (f"/api/v1/beads/{bead.id}/dependencies/", {"depends_on": HUGE}),
        (f"/api/v1/beads/{bead.id}/dependencies/", {"depends_on": [1]}),
        (f"/api/v1/beads/{bead.id}/dependencies/", {"depends_on": "1" * 40}),
        (f"/api/v1/beads/{bead.id}/claim/", {"agent": ["x"]}),
        (f"/api/v1/rigs/{rig.id}/merge-requests/", {"priority": HUGE}),
        (f"/api/v1/rigs/{rig.id}/teardown/", {"force": "maybe"}),
        ("/api/v1/notifications/ack/", {"rig": HUGE}),
        ("/api/v1/notifications/ack/", {"rig": "abc"}),
        ("/api/v1/rigs/", {"slug": "x", "repository": HUGE}),
        ("/api/v1/rigs/", {"slug": 5, "repository": rig.repository_id, "scope": [1, {}]}),
        ("/api/v1/convoys/", {"title": "t", "repository": HUGE, "legs": []}),
        (
            "/api/v1/convoys/",
            {
                "title": "t",
                "repository": rig.repository_id,
                "legs": [{"key": "a", "title": "A", "rig": HUGE}],
            },
        ),
        ("/api/v1/convoys/", {"title": "t", "repository": rig.repository_id, "legs": [None]}),
        ("/api/v1/repositories/", {"name": "r", "path": "/tmp/x", "batch_size": HUGE}),
        ("/api/v1/repositories/", {"name": "r", "path": "/tmp/x", "gate_timeout_seconds": HUGE}),
    ]
    for url, body in cases:
        caller = operator if url.startswith(("/api/v1/convoys", "/api/v1/repositories")) else client
        response = caller.post(url, body, format="json")
        assert response.status_code == 400, (url, body, response.content)
        assert error_of(response)["field"], (url, body, response.json())


def test_unknown_and_huge_ids_in_paths_are_404(world, operator):
    client, *_ = world
    for template in [
        "/api/v1/repositories/{}/",
        "/api/v1/rigs/{}/",
        "/api/v1/merge-requests/{}/",
        "/api/v1/convoys/{}/",
        "/api/v1/beads/{}/",
    ]:
        for pk in (999999, HUGE, 0):
            response = client.get(template.format(pk))
            assert response.status_code == 404, (template, pk, response.content)
            assert error_of(response)["code"] == "not_found"
    for template in [
        "/api/v1/rigs/{}/heartbeat/",
        "/api/v1/rigs/{}/merge-requests/",
        "/api/v1/beads/{}/claim/",
        "/api/v1/beads/{}/close/",
        "/api/v1/notifications/{}/ack/",
    ]:
        response = client.post(template.format(HUGE), {}, format="json")
        assert response.status_code == 404, template
    for template in ["/api/v1/convoys/{}/launch/", "/api/v1/convoys/{}/cancel/"]:
        assert operator.post(template.format(HUGE)).status_code == 404


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/beads/?rig=abc",
        "/api/v1/beads/?rig=\u00b2",
        "/api/v1/beads/?ready=perhaps",
        "/api/v1/beads/?convoy=-1",
        "/api/v1/beads/?repository=99999999999999999999999",
        "/api/v1/rigs/?repository=abc",
        "/api/v1/rigs/?state=sleeping",
        "/api/v1/repositories/?limit=abc",
        "/api/v1/notifications/?unacked=2",
        "/api/v1/notifications/?rig=1;drop",
        "/api/v1/notifications/?kind=gossip",
        "/api/v1/events/?after=1e9",
        "/api/v1/merge-requests/?rig=abc",
        "/api/v1/convoys/?repository=%00",
    ],
)
def test_bad_query_parameters_are_400_naming_the_parameter(world, url):
    client, *_ = world
    response = client.get(url)
    assert response.status_code == 400, (url, response.content)
    name = url.split("?")[1].split("=")[0]
    assert error_of(response)["field"] == name


def test_huge_offsets_and_limits_are_bounded(world):
    client, *_ = world
    for url in ["/api/v1/rigs/", "/api/v1/merge-requests/", "/api/v1/notifications/",
                "/api/v1/convoys/", "/api/v1/repositories/", "/api/v1/beads/"]:  # fmt: skip
        response = client.get(url, {"offset": HUGE, "limit": HUGE})
        assert response.status_code == 200, (url, response.content)
        assert response.json()["results"] == []
    assert len(client.get("/api/v1/events/", {"limit": HUGE}).json()["results"]) <= 1000


def test_methods_not_allowed_keep_the_error_body(world):
    client, rig, *_ = world
    response = client.delete(f"/api/v1/rigs/{rig.id}/")
    assert response.status_code == 405 and error_of(response)["code"] == "method_not_allowed"
