"""Review comments through the API (issue 21 §2): operators comment, the rig's agent reads them
(its inbox and `review-comments/`), answers and resolves them; other agents and viewers are
refused; bad input names every field; the briefing lists the open ones; `gt review` end to end
against the real server."""

import pytest

from convoys.briefing import prime_text
from convoys.models import ReviewComment
from notifications.models import Notification
from rigs.models import Rig
from tests import factories
from tests.api.conftest import error_of

pytestmark = pytest.mark.django_db

HEAD = "a" * 40


@pytest.fixture
def setup(make_agent):
    agent, client = make_agent("ada")
    rig = factories.rig(agent=agent, state=Rig.State.WORKING, slug="api")
    other_agent, other = make_agent("bob")
    factories.rig(agent=other_agent, repository=rig.repository, state=Rig.State.WORKING)
    return rig, client, other


def comment_on(operator, rig, **extra):
    body = {"rig": rig.id, "path": "app.py", "line": 5, "commit": HEAD,
            "excerpt": "    return x", "text": "Name this better.", **extra}  # fmt: skip
    return operator.post("/api/v1/review-comments/", body, format="json")


def test_an_operator_comments_and_the_agent_is_told(setup, operator):
    rig, agent, _ = setup
    answer = comment_on(operator, rig)
    assert answer.status_code == 201, answer.content
    thread = answer.json()
    assert thread["path"] == "app.py" and thread["line"] == 5 and thread["state"] == "open"
    notice = agent.get("/api/v1/notifications/", {"rig": rig.id}).json()["results"][0]
    assert notice["kind"] == "review_comment"
    assert notice["changes"]["file"] == "app.py" and notice["changes"]["line"] == 5
    assert notice["changes"]["excerpt"] == "    return x"
    assert notice["changes"]["text"] == "Name this better."
    listed = agent.get("/api/v1/review-comments/", {"state": "open"}).json()
    assert [t["id"] for t in listed["results"]] == [thread["id"]]
    whole = operator.post("/api/v1/review-comments/", {"rig": rig.id, "text": "Nice overall."},
                          format="json")  # fmt: skip
    assert whole.status_code == 201 and whole.json()["path"] == ""


def test_the_agent_answers_and_resolves(setup, operator):
    rig, agent, _ = setup
    thread = comment_on(operator, rig).json()
    reply = agent.post(f"/api/v1/review-comments/{thread['id']}/reply/", {"text": "Done."},
                       format="json")  # fmt: skip
    assert reply.status_code == 201
    assert reply.json()["replies"][0] == {**reply.json()["replies"][0], "author": "ada",
                                          "by_agent": True, "text": "Done."}  # fmt: skip
    fixed = "b" * 40
    resolved = agent.post(f"/api/v1/review-comments/{thread['id']}/resolve/", {"commit": fixed},
                          format="json")  # fmt: skip
    assert resolved.status_code == 200
    assert resolved.json()["state"] == "resolved" and resolved.json()["resolved_commit"] == fixed
    notice = Notification.objects.get(kind="review_comment")
    assert notice.state == "resolved" and "resolved by ada" in notice.resolution
    again = agent.post(f"/api/v1/review-comments/{thread['id']}/resolve/", {}, format="json")
    assert again.status_code == 409 and error_of(again)["code"] == "already_resolved"
    late = agent.post(f"/api/v1/review-comments/{thread['id']}/reply/", {"text": "x"},
                      format="json")  # fmt: skip
    assert late.status_code == 409


def test_a_persons_answer_updates_the_agents_notice(setup, operator):
    rig, _agent, _ = setup
    thread = comment_on(operator, rig).json()
    operator.post(f"/api/v1/review-comments/{thread['id']}/reply/", {"text": "Also the docs."},
                  format="json")  # fmt: skip
    notices = Notification.objects.filter(rig=rig, kind="review_comment")
    assert notices.count() == 1  # one open notice per thread, updated in place
    assert "Also the docs." in notices.get().summary


def test_who_may_do_what(setup, operator, viewer, nobody, anon):
    rig, agent, other = setup
    thread = comment_on(operator, rig).json()
    # agents and viewers never comment; people without a role see nothing
    assert comment_on(agent, rig).status_code == 403
    assert comment_on(viewer, rig).status_code == 403
    assert nobody.get("/api/v1/review-comments/").status_code == 403
    assert anon.get("/api/v1/review-comments/").status_code in (401, 403)
    # another agent: not its rig
    assert other.get(f"/api/v1/review-comments/{thread['id']}/").status_code == 403
    assert other.get("/api/v1/review-comments/", {"rig": rig.id}).status_code == 403
    assert other.get("/api/v1/review-comments/").json()["count"] == 0
    for action, body in (("reply", {"text": "x"}), ("resolve", {})):
        url = f"/api/v1/review-comments/{thread['id']}/{action}/"
        assert other.post(url, body, format="json").status_code == 403
        assert viewer.post(url, body, format="json").status_code == 403
    # viewers read everything
    assert viewer.get("/api/v1/review-comments/").json()["count"] == 1
    assert viewer.get(f"/api/v1/review-comments/{thread['id']}/").status_code == 200


def test_bad_input_names_every_field(setup, operator):
    rig, _, _ = setup
    answer = operator.post(
        "/api/v1/review-comments/",
        {"rig": rig.id, "text": "", "line": 0, "commit": "xyz", "side": "left"},
        format="json",
    )
    assert answer.status_code == 400
    fields = {e["field"] for e in error_of(answer)["errors"]}
    assert {"text", "line", "commit", "side"} <= fields
    no_path = operator.post("/api/v1/review-comments/", {"rig": rig.id, "text": "x", "line": 2},
                            format="json")  # fmt: skip
    assert no_path.status_code == 400 and error_of(no_path)["field"] == "path"
    no_commit = operator.post("/api/v1/review-comments/",
                              {"rig": rig.id, "text": "x", "path": "a.py", "line": 2},
                              format="json")  # fmt: skip
    assert error_of(no_commit)["field"] == "commit"
    missing = operator.post("/api/v1/review-comments/", {"rig": 99999, "text": "x"},
                            format="json")  # fmt: skip
    assert missing.status_code == 400 and error_of(missing)["field"] == "rig"
    bad_query = operator.get("/api/v1/review-comments/", {"state": "maybe", "rig": "x"})
    assert bad_query.status_code == 400
    assert {e["field"] for e in error_of(bad_query)["errors"]} == {"state", "rig"}
    assert operator.get("/api/v1/review-comments/", {"colour": "red"}).status_code == 400
    assert operator.get("/api/v1/review-comments/424242/").status_code == 404


def test_the_list_takes_a_fixed_number_of_queries(setup, operator, django_assert_max_num_queries):
    rig, agent, _ = setup
    for n in range(8):
        thread = comment_on(operator, rig, line=n + 1).json()
        agent.post(f"/api/v1/review-comments/{thread['id']}/reply/", {"text": "ok"},
                   format="json")  # fmt: skip
    with django_assert_max_num_queries(8):
        listed = agent.get("/api/v1/review-comments/").json()
    assert listed["count"] == 8 and all(t["replies"] for t in listed["results"])


def test_the_briefing_lists_open_review_comments(setup, operator):
    rig, _, _ = setup
    thread = comment_on(operator, rig).json()
    text = prime_text(rig.agent)
    assert "## Open review comments on your change" in text
    assert f"#{thread['id']} app.py:5 - op: Name this better." in text
    assert "gt review resolve ID" in text
    ReviewComment.objects.update(state="resolved")
    assert "Open review comments" not in prime_text(rig.agent)


def test_outside_testers_inputs_are_refused(setup, operator):
    """A path that climbs out, a line past any file, digits other than 0-9, a stray query
    parameter beside a bad one: each a 400 naming its field."""
    rig, _, _ = setup
    climbing = comment_on(operator, rig, path="../../../etc/passwd")
    assert climbing.status_code == 400 and error_of(climbing)["field"] == "path"
    huge = comment_on(operator, rig, line=10**30)
    assert huge.status_code == 400 and error_of(huge)["field"] == "line"
    foreign = comment_on(operator, rig, line="\u0663")
    assert foreign.status_code == 400 and error_of(foreign)["field"] == "line"
    both = operator.get("/api/v1/review-comments/", {"rig": "abc", "foo": "1"})
    assert {e["field"] for e in error_of(both)["errors"]} == {"rig", "foo"}
