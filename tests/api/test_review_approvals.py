"""Approvals (issue 21 §3) against a real repository and the real merge queue (run in this
process): with `review_required = 1` a merge request waits in `awaiting_review`; an operator's
approval of its commit lets it gate and land; a commit after the approval sends it back to
waiting; agents and viewers get 403; asking for changes cancels it and tells the agent; the
audit trail is on the merge request."""

from pathlib import Path

import pytest
from django.db import transaction

from convoys.services import rig_merge_request
from notifications.models import Notification
from rigs import git, merge_queue, operations, services
from rigs.models import MergeRequest, Repository, Rig
from tests import factories
from tests.api.conftest import error_of
from tests.rigs.helpers import commit_file, register, wait_rig_state

pytestmark = pytest.mark.django_db(transaction=True)
S = MergeRequest.State


@pytest.fixture
def reviewed(git_repo, make_agent):
    repository = register(git_repo)
    Repository.objects.filter(pk=repository.pk).update(review_required=1)
    repository.refresh_from_db()
    agent, client = make_agent("ada")
    with transaction.atomic():
        rig = services.rig_request(repository=repository, slug="api", agent=agent)
    operations.rig_provision_run(rig.id)
    wait_rig_state(rig, Rig.State.READY, Rig.State.FAILED)
    commit_file(Path(rig.worktree_path), "api.py", "def f():\n    return 1\n", "api")
    operations.rig_sync_run(rig.id)
    rig.refresh_from_db()
    return repository, rig, client


def process(repository):
    return merge_queue.merge_queue_process(repository.id, repository.target_branch)


def test_a_merge_request_waits_for_an_approval_of_its_commit(reviewed, operator, viewer):
    repository, rig, agent = reviewed
    mr = rig_merge_request(rig=rig, requested_by="ada")
    assert mr.state == S.AWAITING_REVIEW and mr.reviews_required == 1
    process(repository)
    mr.refresh_from_db()
    assert mr.state == S.AWAITING_REVIEW  # not gated
    head = git.resolve_branch(repository.path, rig.branch)
    assert mr.source_commit == head

    url = f"/api/v1/merge-requests/{mr.id}/approve/"
    refused = agent.post(url, {"commit": head}, format="json")
    assert refused.status_code == 403 and "Agents never review" in error_of(refused)["message"]
    assert viewer.post(url, {"commit": head}, format="json").status_code == 403
    stale = operator.post(url, {"commit": "f" * 40}, format="json")
    assert stale.status_code == 409 and error_of(stale)["code"] == "stale_commit"
    bad = operator.post(url, {"commit": "nope"}, format="json")
    assert bad.status_code == 400 and error_of(bad)["field"] == "commit"

    approved = operator.post(url, {"commit": head}, format="json")
    assert approved.status_code == 200, approved.content
    body = approved.json()
    assert body["state"] == "queued"
    assert [(a["by"], a["verdict"], a["commit"]) for a in body["approvals"]] == [
        ("op", "approved", head)
    ]
    again = operator.post(url, {"commit": head}, format="json")
    assert again.status_code == 409 and error_of(again)["code"] == "not_awaiting_review"

    # the agent commits after the approval: back to waiting, nothing lands
    newer = commit_file(Path(rig.worktree_path), "api.py", "def f():\n    return 2\n", "more")
    before = git.resolve_branch(repository.path, "main")
    process(repository)
    mr.refresh_from_db()
    assert mr.state == S.AWAITING_REVIEW and mr.source_commit == newer
    assert "new commits since the approval" in mr.reason
    assert git.resolve_branch(repository.path, "main") == before

    # approve the new commit: it gates and lands
    assert operator.post(url, {"commit": newer}, format="json").json()["state"] == "queued"
    process(repository)
    mr.refresh_from_db()
    assert mr.state == S.MERGED
    assert git.is_ancestor(repository.path, newer, "main")
    trail = agent.get(f"/api/v1/merge-requests/{mr.id}/").json()["approvals"]
    assert [a["commit"] for a in trail] == [head, newer]


def test_requesting_changes_sends_it_back_to_the_agent(reviewed, operator):
    repository, rig, agent = reviewed
    mr = rig_merge_request(rig=rig, requested_by="ada")
    process(repository)
    mr.refresh_from_db()
    url = f"/api/v1/merge-requests/{mr.id}/request-changes/"
    blank = operator.post(url, {"commit": mr.source_commit}, format="json")
    assert blank.status_code == 400 and error_of(blank)["field"] == "note"
    assert (
        agent.post(url, {"commit": mr.source_commit, "note": "x"}, format="json").status_code == 403
    )
    answer = operator.post(
        url, {"commit": mr.source_commit, "note": "Add a test for f."}, format="json"
    )
    assert answer.status_code == 200, answer.content
    assert answer.json()["state"] == "cancelled"
    assert answer.json()["approvals"][0]["verdict"] == "changes_requested"
    rig.refresh_from_db()
    assert rig.state != Rig.State.MERGING
    notice = Notification.objects.get(rig=rig, kind="review_comment")
    assert "asked for changes on merge request" in notice.summary and "Add a test" in notice.summary
    inbox = agent.get("/api/v1/notifications/", {"rig": rig.id}).json()["results"]
    assert any(n["changes"].get("merge_request") == mr.id for n in inbox)


def test_a_convoy_may_ask_for_more_reviews(make_agent):
    agent, _ = make_agent("bo")
    repository = factories.repository()
    rig = factories.rig(repository=repository, agent=agent, state=Rig.State.WORKING,
                        branch="rig/x", head_commit="a" * 40)  # fmt: skip
    convoy = factories.convoy(repository=repository, state="launched", review_required=2)
    factories.leg(convoy=convoy, rig=rig, state="working")
    mr = rig_merge_request(rig=rig, force=True)
    assert mr.state == S.AWAITING_REVIEW and mr.reviews_required == 2
