"""The task graph through the API: create, show, edit, claim, close, dependencies."""

import pytest

from convoys import services
from convoys.models import Bead, BeadDependency
from events.models import Event
from notifications.models import Notification
from rigs.models import Agent, Rig
from tests import factories
from tests.api.conftest import error_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def mine(make_agent):
    agent, client = make_agent("owner")
    rig = factories.rig(agent=agent, state=Rig.State.WORKING)
    return agent, client, rig


def test_create_in_own_rig_with_links(mine):
    _, client, rig = mine
    parent = services.bead_create(title="parent", rig=rig)
    blocked = services.bead_create(title="waits for the new one", rig=rig)
    response = client.post(
        "/api/v1/beads/",
        {
            "title": "found a bug",
            "rig": rig.id,
            "priority": 1,
            "type": "bug",
            "labels": ["auth"],
            "blocks": [blocked.short_id],
            "discovered_from": parent.id,
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "open" and body["rig"] == rig.id and body["type"] == "bug"
    new = Bead.objects.get(pk=body["id"])
    assert BeadDependency.objects.filter(bead=blocked, depends_on=new, type="blocks").exists()
    assert BeadDependency.objects.filter(
        bead=new, depends_on=parent, type="discovered-from"
    ).exists()


def test_create_refusals(mine, make_agent, viewer, operator):
    _, client, rig = mine
    _, stranger = make_agent("stranger")
    response = stranger.post("/api/v1/beads/", {"title": "x", "rig": rig.id}, format="json")
    assert response.status_code == 403 and "own rigs" in error_of(response)["message"]
    pool = factories.repository()
    response = client.post("/api/v1/beads/", {"title": "x", "repository": pool.id}, format="json")
    assert response.status_code == 403  # agents do not fill pools
    assert (
        viewer.post("/api/v1/beads/", {"title": "x", "rig": rig.id}, format="json").status_code
        == 403
    )
    response = operator.post("/api/v1/beads/", {"title": "x", "repository": pool.id}, format="json")
    assert response.status_code == 201 and response.json()["repository"] == pool.id
    other_rig_bead = services.bead_create(title="theirs", rig=factories.rig())
    response = client.post(
        "/api/v1/beads/",
        {"title": "x", "rig": rig.id, "blocks": [other_rig_bead.short_id]},
        format="json",
    )
    assert response.status_code == 403  # the edge would belong to another agent's bead
    for body, field in [
        ({"rig": rig.id}, "title"),
        ({"title": "", "rig": rig.id}, "title"),
        ({"title": "x" * 301, "rig": rig.id}, "title"),
        ({"title": "x", "rig": rig.id, "priority": 9}, "priority"),
        ({"title": "x", "rig": rig.id, "priority": "high"}, "priority"),
        ({"title": "x", "rig": rig.id, "type": "saga"}, "type"),
        ({"title": "x", "rig": rig.id, "labels": "auth"}, "labels"),
        ({"title": "x", "rig": 10**30}, "rig"),
        ({"title": "x", "rig": 999999}, "rig"),
        ({"title": "x", "rig": rig.id, "blocks": ["gt-nope"]}, "blocks"),
        ({"title": "x", "rig": rig.id, "discovered_from": True}, "discovered_from"),
        ({"title": "x", "rig": rig.id, "defer_until": "tomorrow"}, "defer_until"),
    ]:
        response = client.post("/api/v1/beads/", body, format="json")
        assert response.status_code == 400, (body, response.json())
        assert error_of(response)["field"] == field, (body, response.json())
    assert Bead.objects.count() == 2


def test_show_explains_and_links(mine):
    _, client, rig = mine
    blocker = services.bead_create(title="blocker", rig=rig)
    bead = services.bead_create(title="task", rig=rig)
    services.bead_dependency_add(bead=bead, depends_on=blocker)
    for ref in (bead.short_id, str(bead.id), bead.short_id.upper()):
        body = client.get(f"/api/v1/beads/{ref}/").json()
        assert body["id"] == bead.id and body["ready"] is False
    assert any(blocker.short_id in r for r in body["not_ready_reasons"])
    assert body["dependencies"] == [
        {"id": blocker.id, "short_id": blocker.short_id, "title": "blocker", "status": "open",
         "rig": rig.id, "type": "blocks"}
    ]  # fmt: skip
    assert client.get(f"/api/v1/beads/{blocker.short_id}/").json()["dependents"][0]["id"] == bead.id
    for ref in ("gt-zzzzzz", "0", "99999999999999999999999", "x" * 300):
        response = client.get(f"/api/v1/beads/{ref}/")
        assert response.status_code == 404, ref
        assert error_of(response)["code"] == "not_found"


def test_claim_is_refused_in_another_agents_rig_and_names_the_holder(mine, make_agent, operator):
    _, client, rig = mine
    _, stranger = make_agent("stranger")
    bead = services.bead_create(title="mine", rig=rig)
    response = stranger.post(f"/api/v1/beads/{bead.short_id}/claim/", {}, format="json")
    assert response.status_code == 403 and rig.slug in error_of(response)["message"]
    response = client.post(f"/api/v1/beads/{bead.short_id}/claim/", {}, format="json")
    assert response.status_code == 200
    assert response.json()["status"] == "in_progress" and response.json()["assignee"] == "owner"
    # claiming it again is a no-op
    assert client.post(f"/api/v1/beads/{bead.id}/claim/").status_code == 200

    # a pool bead: the first claimer wins, the second is told who holds it
    pool = factories.repository()
    pool_bead = services.bead_create(title="pool", repository=pool)
    first_agent, first = make_agent("first")
    # no rig on the pool's repository: its work is not yours to take
    response = first.post(f"/api/v1/beads/{pool_bead.short_id}/claim/")
    assert response.status_code == 403 and error_of(response)["code"] == "no_rig"
    factories.rig(repository=pool, agent=first_agent, state=Rig.State.READY)
    factories.rig(repository=pool, agent=Agent.objects.get(name="stranger"))
    assert first.post(f"/api/v1/beads/{pool_bead.short_id}/claim/").status_code == 200
    response = stranger.post(f"/api/v1/beads/{pool_bead.short_id}/claim/")
    assert response.status_code == 409
    error = error_of(response)
    assert error["code"] == "claimed" and "first" in error["message"]

    blocked = services.bead_create(title="blocked", rig=rig)
    services.bead_dependency_add(bead=blocked, depends_on=services.bead_create(title="b", rig=rig))
    response = client.post(f"/api/v1/beads/{blocked.short_id}/claim/")
    assert response.status_code == 409 and error_of(response)["code"] == "not_ready"

    # operators claim for an agent, and must name it
    free = services.bead_create(title="free", rig=rig)
    assert error_of(operator.post(f"/api/v1/beads/{free.id}/claim/"))["field"] == "agent"
    response = operator.post(f"/api/v1/beads/{free.id}/claim/", {"agent": "owner"}, format="json")
    assert response.status_code == 200 and response.json()["assignee"] == "owner"
    response = client.post(f"/api/v1/beads/{free.id}/claim/", {"agent": "first"}, format="json")
    assert response.status_code == 403


def test_close_returns_what_it_unblocked(mine, make_agent):
    _, client, rig = mine
    first = services.bead_create(title="first", rig=rig)
    second = services.bead_create(title="second", rig=rig)
    services.bead_dependency_add(bead=second, depends_on=first)
    _, stranger = make_agent("stranger")
    assert stranger.post(f"/api/v1/beads/{first.short_id}/close/").status_code == 403
    response = client.post(
        f"/api/v1/beads/{first.short_id}/close/", {"reason": "shipped"}, format="json"
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["bead"]["status"] == "closed" and body["bead"]["close_reason"] == "shipped"
    assert [b["short_id"] for b in body["unblocked"]] == [second.short_id]
    assert Notification.objects.filter(rig=rig, kind="unblocked").exists()
    response = client.post(f"/api/v1/beads/{first.short_id}/close/")
    assert response.status_code == 409 and error_of(response)["code"] == "illegal_transition"


def test_dependencies_and_cycles(mine, make_agent):
    _, client, rig = mine
    a, b, c = (services.bead_create(title=t, rig=rig) for t in "abc")
    url = f"/api/v1/beads/{a.short_id}/dependencies/"
    response = client.post(url, {"depends_on": b.short_id}, format="json")
    assert response.status_code == 201
    assert response.json()["bead"] == a.short_id and response.json()["type"] == "blocks"
    client.post(f"/api/v1/beads/{b.short_id}/dependencies/", {"depends_on": c.id}, format="json")
    response = client.post(
        f"/api/v1/beads/{c.short_id}/dependencies/", {"depends_on": a.short_id}, format="json"
    )
    assert response.status_code == 409
    error = error_of(response)
    assert error["code"] == "cycle" and error["field"] == "depends_on"
    assert f"{c.short_id} -> {a.short_id} -> {b.short_id} -> {c.short_id}" in error["message"]
    for body, field in [
        ({"depends_on": b.short_id}, "depends_on"),  # already there
        ({"depends_on": a.short_id}, "depends_on"),  # itself
        ({"depends_on": "gt-missing"}, "depends_on"),
        ({"depends_on": c.id, "type": "owns"}, "type"),
        ({}, "depends_on"),
    ]:
        response = client.post(url, body, format="json")
        assert response.status_code == 400, (body, response.json())
        assert error_of(response)["field"] == field
    _, stranger = make_agent("stranger")
    response = stranger.post(url, {"depends_on": c.short_id}, format="json")
    assert response.status_code == 403
    # depending on another rig's bead is how rigs coordinate: allowed
    theirs = services.bead_create(title="theirs", rig=factories.rig())
    response = client.post(url, {"depends_on": theirs.short_id, "type": "related"}, format="json")
    assert response.status_code == 201


def test_patch_goes_through_the_state_machine(mine, make_agent):
    _, client, rig = mine
    parent = services.bead_create(title="parent", rig=rig)
    child = services.bead_create(title="child", rig=rig)
    services.bead_dependency_add(bead=child, depends_on=parent, type="parent-child")
    url = f"/api/v1/beads/{parent.short_id}/"
    response = client.patch(
        url, {"title": "renamed", "priority": 0, "labels": ["x"]}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert response.json()["title"] == "renamed" and response.json()["priority"] == 0
    assert Event.objects.filter(kind="bead.updated").exists()

    assert client.patch(url, {"status": "blocked"}, format="json").json()["status"] == "blocked"
    assert not client.get(f"/api/v1/beads/{child.short_id}/").json()["ready"]
    response = client.patch(url, {"status": "open"}, format="json")
    assert response.json()["status"] == "open"
    # the child became ready again: its rig was told
    assert Notification.objects.filter(rig=rig, kind="unblocked").exists()

    response = client.patch(url, {"status": "in_progress"}, format="json")
    assert response.status_code == 400 and "claim" in error_of(response)["message"]
    response = client.patch(url, {"status": "closed", "close_reason": "done"}, format="json")
    assert response.json()["status"] == "closed" and response.json()["close_reason"] == "done"
    assert client.patch(url, {"status": "deferred"}, format="json").status_code == 409
    assert client.patch(url, {"status": "open"}, format="json").json()["status"] == "open"

    response = client.patch(url, {"defer_until": "2999-01-01T00:00:00Z"}, format="json")
    assert response.status_code == 200 and response.json()["ready"] is False
    assert client.patch(url, {"defer_until": None}, format="json").json()["ready"] is True
    for body, field in [
        ({"priority": -1}, "priority"),
        ({"status": "done"}, "status"),
        ({"title": ""}, "title"),
        ({"labels": [""]}, "labels"),
    ]:
        response = client.patch(url, body, format="json")
        assert response.status_code == 400, body
        assert error_of(response)["field"].startswith(field), response.json()
    _, stranger = make_agent("stranger")
    assert stranger.patch(url, {"title": "mine now"}, format="json").status_code == 403
    assert stranger.get(url).status_code == 200  # reading is fine


def test_pool_bead_moves_into_the_claimers_rig(make_agent):
    agent, client = make_agent("mover")
    rig = factories.rig(agent=agent, state=Rig.State.READY)
    bead = services.bead_create(title="pool", repository=rig.repository)
    response = client.post(f"/api/v1/beads/{bead.short_id}/claim/")
    assert response.status_code == 200 and response.json()["rig"] == rig.id


def test_pool_bead_holder_may_close_it(make_agent):
    agent, client = make_agent("solo")
    repository = factories.repository()
    factories.rig(repository=repository, agent=agent, state=Rig.State.PROVISIONING)
    bead = services.bead_create(title="pool", repository=repository)
    assert client.post(f"/api/v1/beads/{bead.id}/close/").status_code == 403
    client.post(f"/api/v1/beads/{bead.id}/claim/")  # its rig there is not ready: stays in pool
    bead.refresh_from_db()
    assert bead.rig_id is None and bead.assignee == agent
    assert client.post(f"/api/v1/beads/{bead.id}/close/").status_code == 200


def test_fast_bead_rows_match_the_serializer(mine):
    from datetime import timedelta

    from django.utils import timezone

    from convoys.api import bead_row
    from convoys.serializers import BeadSerializer

    agent, client, rig = mine
    plain = services.bead_create(title="plain", rig=rig, labels=["a", "b"])
    full = services.bead_create(
        title="full", rig=rig, defer_until=timezone.now() + timedelta(days=1), type="bug"
    )
    services.bead_claim(bead=plain, agent=agent)
    services.bead_close(bead=full, reason="r")
    pool = services.bead_create(title="pool", repository=rig.repository)
    for bead in Bead.objects.select_related("assignee").filter(pk__in=[plain.pk, full.pk, pool.pk]):
        assert bead_row(bead) == BeadSerializer(bead).data
    listed = client.get("/api/v1/beads/").json()["results"]
    assert {b["id"]: b for b in listed}[plain.id] == BeadSerializer(
        Bead.objects.get(pk=plain.pk)
    ).data


# --- claims are leases ------------------------------------------------------------------------


def test_a_claim_shows_its_lease_and_a_heartbeat_renews_it(mine, settings):
    from datetime import timedelta

    from django.utils import timezone

    settings.GASTOWN_CLAIM_LEASE_SECONDS = 600
    _, client, rig = mine
    bead = services.bead_create(title="leased", rig=rig)
    body = client.post(f"/api/v1/beads/{bead.id}/claim/").json()
    assert body["status"] == "in_progress" and body["claimed_by_run"] is None
    bead.refresh_from_db()
    assert body["lease_expires_at"] == bead.lease_expires_at.isoformat().replace("+00:00", "Z")
    shown = client.get(f"/api/v1/beads/{bead.id}/").json()
    assert shown["lease_expires_at"] == body["lease_expires_at"]
    soon = timezone.now() + timedelta(seconds=20)
    Bead.objects.filter(pk=bead.pk).update(lease_expires_at=soon)
    assert client.post(f"/api/v1/rigs/{rig.id}/heartbeat/").status_code == 200
    bead.refresh_from_db()
    assert (bead.lease_expires_at - timezone.now()).total_seconds() > 590


def test_another_agent_takes_a_pool_bead_whose_lease_lapsed(make_agent):
    """A pool bead in the holder's rig is not 'another agent's rig' (403) but a claim: 409
    naming the holder while its lease runs, and the claimant's once it lapsed."""
    from datetime import timedelta

    from django.utils import timezone

    repository = factories.repository()
    holder, holder_client = make_agent("holder")
    rival, rival_client = make_agent("rival")
    factories.rig(agent=holder, repository=repository, state=Rig.State.WORKING)
    rival_rig = factories.rig(agent=rival, repository=repository, state=Rig.State.WORKING)
    bead = services.bead_create(title="pool", repository=repository)
    assert holder_client.post(f"/api/v1/beads/{bead.id}/claim/").status_code == 200
    response = rival_client.post(f"/api/v1/beads/{bead.id}/claim/")
    assert response.status_code == 409 and error_of(response)["code"] == "claimed"
    assert "already claimed by holder (its lease runs until" in error_of(response)["message"]
    Bead.objects.filter(pk=bead.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    response = rival_client.post(f"/api/v1/beads/{bead.id}/claim/")
    assert response.status_code == 200, response.json()
    assert (response.json()["assignee"], response.json()["rig"]) == ("rival", rival_rig.id)
    lapsed = Event.objects.get(kind="bead.claim_lapsed").payload
    assert (lapsed["agent"], lapsed["cause"]) == ("holder", "lease")
