"""Authentication (agent tokens, personal tokens, sessions with CSRF, websockets), roles,
throttling, and the token management commands."""

from datetime import timedelta
from io import StringIO

import pytest
from asgiref.sync import async_to_sync
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from rest_framework.test import APIClient

from rigs import services
from rigs.auth import AgentUser, TokenAuthMiddleware
from rigs.models import Agent, ApiToken
from tests.api.conftest import error_of

pytestmark = pytest.mark.django_db


def token_client(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def test_create_agent_prints_only_a_token_stored_hashed():
    out = StringIO()
    call_command("create_agent", "claude-9", stdout=out)
    token = out.getvalue().strip()
    assert token.startswith("gt_") and "\n" not in token
    agent = Agent.objects.get(name="claude-9")
    assert token not in agent.token_hash and len(agent.token_hash) == 64
    assert token_client(token).get("/api/v1/me/").json()["agent"]["name"] == "claude-9"


def test_personal_token_acts_with_the_users_roles(make_person):
    person = make_person("ada", "operator")
    out = StringIO()
    call_command("create_api_token", "ada", "--name", "scripts", stdout=out)
    raw = out.getvalue().strip()
    assert raw.startswith("gtp_")
    stored = ApiToken.objects.get(user=person.user)
    assert stored.token_hash != raw and stored.name == "scripts"
    client = token_client(raw)
    me = client.get("/api/v1/me/").json()
    assert me["kind"] == "person" and me["user"] == {"username": "ada", "roles": ["operator"]}
    # no CSRF token needed with a token (it is not a cookie)
    response = client.post("/api/v1/convoys/", {}, format="json")
    assert response.status_code == 400  # an operator: reached validation
    stored.refresh_from_db()
    assert stored.last_used_at is not None


def test_revoked_expired_and_unknown_tokens_are_401(make_person, make_agent):
    make_person("ada", "viewer")
    raw = StringIO()
    call_command("create_api_token", "ada", stdout=raw)
    raw = raw.getvalue().strip()
    assert token_client(raw).get("/api/v1/rigs/").status_code == 200
    call_command("revoke_token", "--token", raw[:12], stdout=StringIO())
    response = token_client(raw).get("/api/v1/rigs/")
    assert response.status_code == 401
    assert "revoked" in error_of(response)["message"]
    assert response["WWW-Authenticate"] == "Token"

    agent, client = make_agent("old")
    Agent.objects.filter(pk=agent.pk).update(token_expires_at=timezone.now() - timedelta(1))
    assert client.get("/api/v1/rigs/").status_code == 401
    for header in ["Token", "Token a b", "Token gtp_nope", "Token \u00e9\u00e9"]:
        bad = APIClient()
        bad.credentials(HTTP_AUTHORIZATION=header)
        assert bad.get("/api/v1/rigs/").status_code == 401, header


def test_agent_revoke_and_rotate_commands(make_agent):
    agent, client = make_agent("rot")
    out = StringIO()
    call_command("rotate_agent_token", "rot", "--expires-in-days", "3", stdout=out)
    new = out.getvalue().strip()
    assert client.get("/api/v1/me/").status_code == 401  # the old token stopped working
    assert token_client(new).get("/api/v1/me/").status_code == 200
    agent.refresh_from_db()
    assert agent.token_expires_at > timezone.now() + timedelta(days=2)
    call_command("revoke_token", "--agent", "rot", stdout=StringIO())
    assert token_client(new).get("/api/v1/me/").status_code == 401
    with pytest.raises(CommandError):
        call_command("revoke_token", "--agent", "ghost", stdout=StringIO())
    with pytest.raises(CommandError):
        call_command("create_api_token", "ghost", stdout=StringIO())


def test_session_writes_need_csrf(django_user_model):
    from django.contrib.auth.models import Group

    user = django_user_model.objects.create_user("op", password="pw-123456789")
    user.groups.add(Group.objects.get_or_create(name="operator")[0])
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.get("/api/v1/convoys/").status_code == 200
    response = client.post("/api/v1/convoys/", {}, format="json")
    assert response.status_code == 403 and "CSRF" in error_of(response)["message"]


def test_roles(anon, nobody, viewer, operator, make_agent):
    assert anon.get("/api/v1/rigs/").status_code == 401
    response = nobody.get("/api/v1/rigs/")
    assert response.status_code == 403 and "no role" in error_of(response)["message"]
    assert viewer.get("/api/v1/rigs/").status_code == 200
    assert viewer.post("/api/v1/convoys/", {}, format="json").status_code == 403
    assert operator.post("/api/v1/convoys/", {}, format="json").status_code == 400
    _, agent = make_agent()
    assert agent.get("/api/v1/convoys/").status_code == 200
    assert agent.post("/api/v1/convoys/", {}, format="json").status_code == 403


def test_throttled_per_token_with_retry_after(make_agent, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {
        "token": "3/min", "anon": "100/min"}}  # fmt: skip
    _, first = make_agent("a1")
    _, second = make_agent("a2")
    codes = [first.get("/api/v1/me/").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    response = first.get("/api/v1/me/")
    assert error_of(response)["code"] == "throttled" and int(response["Retry-After"]) >= 0
    assert second.get("/api/v1/me/").status_code == 200  # a budget per token


@pytest.mark.django_db(transaction=True)
def test_websocket_middleware_reads_tokens(make_agent, make_person):
    agent, client = make_agent("ws")
    seen = {}

    async def inner(scope, receive, send):
        seen["user"], seen["auth"] = scope["user"], scope.get("auth")

    middleware = TokenAuthMiddleware(inner)
    call = async_to_sync(middleware)

    call({"type": "websocket", "query_string": f"token={client.token}".encode()}, None, None)
    assert isinstance(seen["user"], AgentUser) and seen["auth"] == agent

    headers = [(b"authorization", f"Token {client.token}".encode())]
    call({"type": "websocket", "query_string": b"", "headers": headers}, None, None)
    assert seen["auth"] == agent

    call({"type": "websocket", "query_string": b"token=bogus"}, None, None)
    assert not seen["user"].is_authenticated

    session_user = object()
    call({"type": "websocket", "query_string": b"groups=board", "user": session_user}, None, None)
    assert seen["user"] is session_user  # no token: the session's user stays

    person = make_person("ada", "viewer")
    token = ApiToken(user=person.user)
    raw = token.issue()
    token.save()
    call({"type": "websocket", "query_string": f"token={raw}".encode()}, None, None)
    assert seen["user"] == person.user and seen["auth"] == token


def test_deactivated_agent_and_user(make_agent, make_person):
    agent, client = make_agent("gone")
    Agent.objects.filter(pk=agent.pk).update(is_active=False)
    assert client.get("/api/v1/me/").status_code == 401
    person = make_person("bob", "viewer")
    token = ApiToken(user=person.user)
    raw = token.issue()
    token.save()
    person.user.is_active = False
    person.user.save()
    assert token_client(raw).get("/api/v1/me/").status_code == 401


def test_agent_create_service_token_is_shown_once():
    _, token = services.agent_create(name="once")
    assert Agent.objects.filter(token_hash__contains=token).count() == 0
