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


def test_bad_fields_and_unknown_ids_are_named_together(rig, operator):
    """A field's own problem and an id looked up afterwards come in the same 400 (a client
    fixing the first should not meet the second only on its next try)."""
    response = rig.client.post(
        "/api/v1/beads/",
        {"title": "x", "rig": rig.id, "priority": 7, "blocks": ["gt-nope1"]},
        format="json",
    )
    assert set(fields_of(response)) == {"priority", "blocks"}
    response = operator.post(
        "/api/v1/convoys/",
        {"title": "", "repository": 999999, "legs": [{"key": "a", "title": "A", "rig": 999999}]},
        format="json",
    )
    assert set(fields_of(response)) == {"title", "repository", "legs[0].rig"}
    response = operator.post(
        "/api/v1/rigs/", {"repository": 999999, "slug": "../../etc"}, format="json"
    )
    assert set(fields_of(response)) == {"repository", "slug"}
    response = rig.client.post(
        "/api/v1/messages/", {"to_rig": 999999, "text": "", "reply_to": 999999}, format="json"
    )
    assert set(fields_of(response)) == {"text", "reply_to"}
    response = rig.client.post("/api/v1/messages/", {"to_rig": 999999, "text": ""}, format="json")
    assert set(fields_of(response)) == {"text", "to_rig"}
    response = operator.post("/api/v1/budgets/", {"window": "week"}, format="json")
    assert set(fields_of(response)) == {"scope", "limit_usd"}
    response = operator.post(
        "/api/v1/budgets/", {"agent": "ghost", "window": "year", "max_agents": 0}, format="json"
    )
    assert set(fields_of(response)) == {"agent", "window", "max_agents", "limit_usd"}


def test_unknown_body_fields_are_named(rig, operator):
    """A key a body does not take is refused with the others (a typo is not dropped in
    silence); a read-only field sent back with an object it was read from is fine."""
    response = rig.client.post(
        "/api/v1/beads/", {"title": "t", "rig": rig.id, "priorty": 1}, format="json"
    )
    error = error_of(response)
    assert fields_of(response) == ["priorty"] and error["code"] == "unknown_field"
    assert "this takes:" in error["message"] and "priority" in error["message"]
    response = operator.post(
        "/api/v1/convoys/",
        {"title": "T", "repository": 1, "legs": [{"key": "a", "title": "A", "bogus": 1}]},
        format="json",
    )
    assert "legs[0].bogus" in fields_of(response)
    shown = rig.client.get(f"/api/v1/rigs/{rig.id}/").json()
    response = rig.client.patch(
        f"/api/v1/rigs/{rig.id}/", {"id": shown["id"], "notify_level": "all"}, format="json"
    )
    assert response.status_code == 200, response.content
