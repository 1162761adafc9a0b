"""Bad input is told all at once: `error.errors` lists every problem (`{field, code, message}`,
nested fields by path), and `code`, `message`, `field` stay the first one's."""

import pytest

from convoys import services
from rigs.models import Rig
from tests import factories
from tests.api.conftest import error_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def rig(make_agent):
    agent, client = make_agent()
    rig = factories.rig(agent=agent, state=Rig.State.WORKING)
    rig.client = client
    return rig


def fields_of(response) -> list[str | None]:
    assert response.status_code == 400, response.content
    return [e["field"] for e in error_of(response)["errors"]]


def test_a_post_with_three_bad_fields_gets_three_errors(rig):
    response = rig.client.post(
        "/api/v1/beads/",
        {"title": "", "rig": rig.id, "priority": 9, "type": "bogus"},
        format="json",
    )
    error = error_of(response)
    assert fields_of(response) == ["title", "priority", "type"]
    assert [e["code"] for e in error["errors"]] == ["blank", "max_value", "invalid_choice"]
    # the first one is still where clients have always read it
    assert (error["field"], error["code"]) == ("title", "blank")
    assert error["message"] == error["errors"][0]["message"]
    assert all(e["message"].startswith(e["field"]) for e in error["errors"])


def test_ids_looked_up_by_the_view_are_all_named(rig):
    response = rig.client.post(
        "/api/v1/beads/",
        {"title": "t", "rig": 999999, "blocks": ["gt-nope1", "gt-nope2"],
         "discovered_from": "gt-nope3"},
        format="json",
    )  # fmt: skip
    assert fields_of(response) == ["rig", "blocks", "blocks", "discovered_from"]
    messages = " ".join(e["message"] for e in error_of(response)["errors"])
    assert all(ref in messages for ref in ("999999", "gt-nope1", "gt-nope2", "gt-nope3"))


def test_nested_fields_are_named_by_path(operator):
    repository = factories.repository()
    # the serializer's own errors, inside a list of objects
    response = operator.post(
        "/api/v1/convoys/",
        {"title": "", "repository": repository.id,
         "legs": [{"key": "a", "title": "A", "agent": "x"}, {"key": "b"}, {"title": "C"}]},
        format="json",
    )  # fmt: skip
    assert fields_of(response) == ["title", "legs[1].title", "legs[2].key"]
    # a service's Django ValidationError with several fields (the legs' rules)
    response = operator.post(
        "/api/v1/convoys/",
        {"title": "T", "repository": repository.id,
         "legs": [{"key": "a", "title": "A", "agent": "nobody", "depends_on": ["zz"]},
                  {"key": "a", "title": "B", "rig": 999999}]},
        format="json",
    )  # fmt: skip
    found = fields_of(response)
    assert {"legs[0].agent", "legs[0].depends_on", "legs[1].key", "legs[1].rig"} <= set(found)
    assert len(found) == len(set(found)) >= 4


def test_bad_query_parameters_are_all_named(rig):
    response = rig.client.get("/api/v1/beads/?rig=abc&ready=perhaps&status=gone")
    assert fields_of(response) == ["rig", "ready", "status"]
    response = rig.client.get("/api/v1/notifications/?rig=x&unacked=2&kind=gossip&since=never")
    assert set(fields_of(response)) == {"rig", "unacked", "kind", "since"}
    response = rig.client.get("/api/v1/events/?convoy=x&rig=-1")
    assert fields_of(response) == ["convoy", "rig"]
    response = rig.client.get("/api/v1/rigs/?repository=abc&state=sleeping")
    assert set(fields_of(response)) == {"repository", "state"}


def test_every_rig_field_that_cannot_change_is_named(rig):
    response = rig.client.patch(
        f"/api/v1/rigs/{rig.id}/", {"slug": "other", "sparse": True}, format="json"
    )
    assert fields_of(response) == ["slug", "sparse"]


def test_other_errors_have_one_item(rig, viewer):
    bead = services.bead_create(title="t", rig=rig)
    response = viewer.post(f"/api/v1/beads/{bead.short_id}/close/", {}, format="json")
    error = error_of(response)
    assert response.status_code == 403 and len(error["errors"]) == 1
    response = rig.client.get("/api/v1/no-such-thing/")
    assert response.status_code == 404 and error_of(response)["errors"][0]["code"] == "not_found"


def test_an_invalid_plan_lists_its_errors_with_their_lines(operator):
    repository = factories.repository()
    plan = "# A\n## db — Schema\n## db — Again\nDepends on: nothing\n"
    response = operator.post(
        "/api/v1/convoys/import/", {"repository": repository.id, "plan": plan}, format="json"
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_plan" and error["field"] == "plan"
    assert error["errors"] and all({"line", "field", "code", "message"} <= set(e) for e in
                                   error["errors"])  # fmt: skip
