"""A rig asks to land its branch; the merge queue's state."""

import pytest

from convoys import services
from rigs.models import MergeRequest, Rig
from tests import factories
from tests.api.conftest import error_of

pytestmark = pytest.mark.django_db


def test_request_merge_of_own_rig(make_agent, django_capture_on_commit_callbacks):
    agent, client = make_agent()
    rig = factories.rig(agent=agent, state=Rig.State.WORKING, head_commit="b" * 40, ahead=2)
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(f"/api/v1/rigs/{rig.id}/merge-requests/", {}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["state"] == "queued" and body["rig"] == rig.id
    assert body["source_commit"] == "b" * 40 and body["target_branch"] == "main"
    assert body["requested_by"] == f"agent:{agent.name}"
    assert set(body) >= {"id", "rig", "state", "source_commit", "merge_commit", "conflicts",
                         "gate_log_tail"}  # fmt: skip
    assert callbacks  # the merge queue runs in a worker, after commit
    rig.refresh_from_db()
    assert rig.state == Rig.State.MERGING
    # asking again while queued supersedes the first request
    second = client.post(f"/api/v1/rigs/{rig.id}/merge-requests/", {"priority": 0}, format="json")
    assert second.status_code == 201 and second.json()["priority"] == 0
    assert MergeRequest.objects.get(pk=body["id"]).state == "superseded"


def test_merge_target_is_the_legs_integration_branch(make_agent):
    agent, client = make_agent()
    rig = factories.rig(agent=agent, state=Rig.State.READY)
    convoy = services.convoy_create(
        title="c", repository=rig.repository, use_integration_branch=True, slug="c",
        legs=[{"key": "a", "title": "A", "rig": rig.id}],
    )  # fmt: skip
    services.convoy_launch(convoy=convoy)
    response = client.post(f"/api/v1/rigs/{rig.id}/merge-requests/")
    assert response.status_code == 201 and response.json()["target_branch"] == "convoy/c"


def test_refusals(make_agent, viewer, operator):
    agent, client = make_agent()
    _, stranger = make_agent("stranger")
    rig = factories.rig(agent=agent, state=Rig.State.WORKING)
    url = f"/api/v1/rigs/{rig.id}/merge-requests/"
    assert stranger.post(url).status_code == 403
    assert viewer.post(url).status_code == 403
    assert client.post("/api/v1/rigs/999999/merge-requests/").status_code == 404
    response = client.post(url, {"priority": 7}, format="json")
    assert response.status_code == 400 and error_of(response)["field"] == "priority"
    factories.merge_request(rig=rig, state=MergeRequest.State.TESTING)
    response = client.post(url)
    assert response.status_code == 409
    assert error_of(response)["code"] == "merge_in_progress"
    requested = factories.rig(agent=agent, state=Rig.State.REQUESTED)
    response = client.post(f"/api/v1/rigs/{requested.id}/merge-requests/")
    assert response.status_code == 400 and error_of(response)["field"] == "rig"
    # operators may ask on an agent's behalf
    other = factories.rig(state=Rig.State.WORKING)
    assert operator.post(f"/api/v1/rigs/{other.id}/merge-requests/").status_code == 201


def test_queue_list_filters_and_detail(viewer, make_agent, django_assert_max_num_queries):
    repo = factories.repository()
    rigs = [factories.rig(repository=repo) for _ in range(3)]
    for n in range(25):
        factories.merge_request(
            rig=rigs[n % 3],
            source_branch=f"b{n}",
            state=["merged", "queued", "failed"][n % 3],
        )
    with django_assert_max_num_queries(6):  # (+1: the approvals, prefetched for the page)
        page = viewer.get("/api/v1/merge-requests/?limit=10").json()
    assert page["count"] == 25 and len(page["results"]) == 10
    assert viewer.get(f"/api/v1/merge-requests/?rig={rigs[0].id}").json()["count"] == 9
    assert viewer.get("/api/v1/merge-requests/?state=queued").json()["count"] == 8
    both = viewer.get("/api/v1/merge-requests/?state=queued&state=failed").json()
    assert both["count"] == 16
    assert viewer.get(f"/api/v1/merge-requests/?repository={repo.id}").json()["count"] == 25
    assert viewer.get("/api/v1/merge-requests/?target_branch=dev").json()["count"] == 0
    for query, field in [
        ("rig=abc", "rig"),
        ("rig=1.5", "rig"),
        ("rig=-3", "rig"),
        ("rig=99999999999999999999999", "rig"),
        ("state=done", "state"),
        ("repository=x", "repository"),
    ]:
        response = viewer.get(f"/api/v1/merge-requests/?{query}")
        assert response.status_code == 400, query
        assert error_of(response)["field"] == field
    mr = page["results"][0]
    assert viewer.get(f"/api/v1/merge-requests/{mr['id']}/").json() == mr
    assert viewer.get("/api/v1/merge-requests/999999/").status_code == 404
    _, agent = make_agent()
    assert agent.get("/api/v1/merge-requests/").status_code == 200  # agents read the queue
