"""Convoys through the API: list, create, detail with legs and progress, launch, cancel."""

import pytest

from convoys.models import Convoy, Leg
from rigs.models import Rig
from tests import factories
from tests.api.conftest import error_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def rigs():
    repository = factories.repository()
    return [factories.rig(repository=repository, slug=s, state=Rig.State.READY) for s in ("a", "b")]


def create(client, rigs, **extra):
    body = {
        "title": "Build auth",
        "repository": rigs[0].repository_id,
        "legs": [
            {"key": "db", "title": "Schema", "rig": rigs[0].id},
            {"key": "api", "title": "Endpoints", "rig": rigs[1].id, "depends_on": ["db"]},
        ],
        **extra,
    }
    return client.post("/api/v1/convoys/", body, format="json")


def test_create_detail_launch_cancel(operator, rigs):
    response = create(operator, rigs, use_integration_branch=True, slug="auth")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["state"] == "draft" and body["integration_branch"] == "convoy/auth"
    legs = {leg["key"]: leg for leg in body["legs"]}
    assert legs["api"]["depends_on"] == ["db"] and legs["api"]["wave"] == 2
    assert legs["db"]["rig"] == rigs[0].id and set(legs["db"]) >= {
        "id", "title", "rig", "state", "depends_on"}  # fmt: skip
    assert body["progress"] == {"landed": 0, "total": 2, "percent": 0}
    assert body["waves"] == [["db"], ["api"]]
    convoy_id = body["id"]

    response = operator.post(f"/api/v1/convoys/{convoy_id}/launch/")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["state"] == "launched"
    assert {leg["key"]: leg["state"] for leg in body["legs"]} == {"db": "ready", "api": "pending"}
    response = operator.post(f"/api/v1/convoys/{convoy_id}/launch/")
    assert response.status_code == 409 and error_of(response)["code"] == "illegal_transition"

    response = operator.post(
        f"/api/v1/convoys/{convoy_id}/cancel/", {"reason": "changed plans"}, format="json"
    )
    assert response.status_code == 200 and response.json()["state"] == "cancelled"
    assert not Leg.objects.filter(convoy_id=convoy_id).exclude(state="cancelled").exists()
    assert operator.post(f"/api/v1/convoys/{convoy_id}/cancel/").status_code == 409


def test_list_and_filters(viewer, operator, rigs, django_assert_max_num_queries):
    for n in range(12):
        repo = factories.repository()
        rig_list = [factories.rig(repository=repo, state=Rig.State.READY) for _ in range(3)]
        response = create(operator, rig_list, title=f"convoy {n}")
        assert response.status_code == 201
    # session + roles, count, page, legs, leg edges
    with django_assert_max_num_queries(7):
        page = viewer.get("/api/v1/convoys/?limit=5").json()
    assert page["count"] == 12 and len(page["results"]) == 5
    assert page["results"][0]["title"] == "convoy 11"  # newest first
    assert all(len(c["legs"]) == 2 for c in page["results"])
    assert viewer.get("/api/v1/convoys/?state=launched").json()["count"] == 0
    repository = Convoy.objects.first().repository_id
    assert viewer.get(f"/api/v1/convoys/?repository={repository}").json()["count"] == 1
    for query, field in [("state=flying", "state"), ("repository=abc", "repository")]:
        response = viewer.get(f"/api/v1/convoys/?{query}")
        assert response.status_code == 400 and error_of(response)["field"] == field


def test_refusals(operator, viewer, make_agent, rigs):
    _, agent = make_agent()
    assert create(agent, rigs).status_code == 403
    assert create(viewer, rigs).status_code == 403
    convoy = factories.convoy()
    assert agent.post(f"/api/v1/convoys/{convoy.id}/launch/").status_code == 403
    assert viewer.post(f"/api/v1/convoys/{convoy.id}/cancel/").status_code == 403
    assert operator.get("/api/v1/convoys/424242/").status_code == 404
    assert operator.post("/api/v1/convoys/424242/launch/").status_code == 404
    # a convoy with no legs cannot launch
    response = operator.post(f"/api/v1/convoys/{convoy.id}/launch/")
    assert response.status_code == 400 and error_of(response)["field"] == "legs"

    bad_legs = [
        ([{"key": "a", "title": "A", "rig": rigs[0].id, "depends_on": ["a"]}],
         "legs[0].depends_on"),
        ([{"key": "a", "title": "A", "rig": 999999}], "legs[0].rig"),
        ([{"key": "a", "title": "A"}], "legs[0].rig"),
        ([{"key": "a", "title": "A", "agent": "ghost"}], "legs[0].agent"),
        ([{"key": "-x", "title": "A", "rig": rigs[0].id}], "legs[0].key"),
        ([{"title": "A", "rig": rigs[0].id}], "legs[0].key"),
        ([{"key": "a", "title": "A", "rig": "abc"}], "legs[0].rig"),
        ([{"key": "a", "title": "A", "rig": rigs[0].id}, {"key": "b", "title": "B",
          "rig": rigs[1].id, "depends_on": ["zzz"]}], "legs[1].depends_on"),
        ("not a list", "legs"),
    ]  # fmt: skip
    for legs, field in bad_legs:
        response = operator.post(
            "/api/v1/convoys/",
            {"title": "t", "repository": rigs[0].repository_id, "legs": legs},
            format="json",
        )
        assert response.status_code == 400, (legs, response.json())
        assert error_of(response)["field"] == field, (legs, response.json())
    for body, field in [
        ({"title": "t", "repository": 999999, "legs": []}, "repository"),
        ({"repository": rigs[0].repository_id, "legs": []}, "title"),
        (
            {
                "title": "t",
                "repository": rigs[0].repository_id,
                "legs": [],
                "target_branch": "a..b",
            },
            "target_branch",
        ),
    ]:
        response = operator.post("/api/v1/convoys/", body, format="json")
        assert response.status_code == 400 and error_of(response)["field"] == field
    assert not Convoy.objects.exclude(pk=convoy.pk).exists()
