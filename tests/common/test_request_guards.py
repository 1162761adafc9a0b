"""The request-level half of the trust boundary (issue 15): body size, bad numbers, deep JSON,
throttled logins and token guesses, security headers and private files. Real requests through
the whole middleware stack."""

import json
import os
import stat
import subprocess
import sys

import pytest
from django.conf import settings
from django.test import Client, override_settings
from rest_framework.test import APIClient

from tests import factories
from tests.api.conftest import error_of

pytestmark = pytest.mark.django_db

BAD_NUMBERS = ["²", "9" * 5000, str(2**64), str(2**63), "-1", "0x10", "1e3", "١٢"]


@pytest.fixture(autouse=True)
def _fresh_throttles():
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


def test_a_body_over_the_limit_gets_413_with_the_error_body(operator):
    body = json.dumps({"title": "t", "description": "x" * (2 * 1024 * 1024)})
    response = operator.post("/api/v1/beads/", body, content_type="application/json")
    assert response.status_code == 413
    assert error_of(response)["code"] == "too_large"


@override_settings(GASTOWN_MAX_BODY_BYTES=100)
def test_the_limit_is_a_setting(operator):
    response = operator.post("/api/v1/beads/", {"title": "x" * 200}, format="json")
    assert response.status_code == 413


def test_json_nested_past_the_recursion_limit_is_a_400(operator):
    deep = "[" * 100_000 + "]" * 100_000
    response = operator.post("/api/v1/beads/", deep, content_type="application/json")
    assert response.status_code == 400
    assert "nested too deeply" in error_of(response)["message"]


def test_a_non_json_body_is_a_400(operator):
    response = operator.post("/api/v1/beads/", b"\xff\xfe{", content_type="application/json")
    assert response.status_code == 400
    error_of(response)


@pytest.mark.parametrize("value", BAD_NUMBERS, ids=range(len(BAD_NUMBERS)))
@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/events/?after={}",
        "/api/v1/events/?rig={}",
        "/api/v1/events/?convoy={}",
        "/api/v1/events/?repository={}",
        "/api/v1/beads/?rig={}",
        "/api/v1/notifications/?rig={}",
    ],
)
def test_bad_numbers_in_query_strings_are_400s_naming_the_field(viewer, url, value):
    response = viewer.get(url.format(value))
    assert response.status_code == 400, response.content
    field = url.split("?")[1].split("=")[0]
    assert error_of(response)["field"] == field


@pytest.mark.parametrize("value", [str(2**64), "9" * 5000], ids=["2^64", "5000-digits"])
def test_huge_ids_in_paths_are_4xx_not_500(viewer, value):
    for url in [f"/api/v1/rigs/{value}/", f"/api/v1/convoys/{value}/", f"/api/v1/beads/{value}/"]:
        response = viewer.get(url)
        assert 400 <= response.status_code < 500, (url, response.status_code)
        error_of(response)


def test_the_sixth_wrong_password_is_refused_without_checking_it(django_user_model):
    django_user_model.objects.create_user("mallory-target", password="right-password-123")
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        response = client.post("/login/", {"username": "mallory-target", "password": "wrong"})
        assert response.status_code == 200  # the form again, with its error
    # the fifth wrong password locks the name out (and says so) ...
    response = client.post("/login/", {"username": "mallory-target", "password": "wrong"})
    assert response.status_code == 429
    # ... and the sixth attempt, even with the right password, is refused unchecked
    response = client.post(
        "/login/", {"username": "mallory-target", "password": "right-password-123"}
    )
    assert response.status_code == 429
    assert b"Too many failed logins" in response.content
    assert "_auth_user_id" not in client.session


def test_admin_logins_are_throttled_too(django_user_model):
    django_user_model.objects.create_superuser("root-target", password="right-password-123")
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/admin/login/", {"username": "root-target", "password": "nope"})
    response = client.post(
        "/admin/login/", {"username": "root-target", "password": "right-password-123"}
    )
    assert response.status_code == 429


def test_logins_from_one_address_are_throttled_across_user_names(django_user_model):
    client = Client(REMOTE_ADDR="203.0.113.9")
    for n in range(settings.AXES_FAILURE_LIMIT):
        client.post("/login/", {"username": f"guess-{n}", "password": "nope"})
    response = client.post("/login/", {"username": "another", "password": "nope"})
    assert response.status_code == 429


@override_settings(GASTOWN_TOKEN_FAILURES_PER_MINUTE=5)
def test_failed_token_checks_are_throttled_per_address(make_agent):
    _, good = make_agent()
    guesser = APIClient(REMOTE_ADDR="198.51.100.7")
    for n in range(5):
        guesser.credentials(HTTP_AUTHORIZATION=f"Token gt_guess{n}")
        assert guesser.get("/api/v1/me/").status_code == 401
    guesser.credentials(HTTP_AUTHORIZATION=f"Token {good.token}")
    response = guesser.get("/api/v1/me/")
    assert response.status_code == 429  # refused before the (right) token is even looked up
    assert error_of(response)["code"] == "throttled"
    # another address is not affected
    assert good.get("/api/v1/me/").status_code == 200


def test_pages_carry_a_content_security_policy(operator):
    response = operator.get("/")
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_api_docs_work_under_the_policy(client):
    page = client.get("/api/docs/")
    assert page.status_code == 200
    assert b"<script>" not in page.content  # the init script is a separate file


def test_files_the_server_creates_are_private(tmp_path):
    assert os.umask(0o077) == 0o077  # (set by settings for every process)
    assert stat.S_IMODE(settings.DATA_DIR.stat().st_mode) == 0o700
    created = tmp_path / "made-by-the-server"
    created.write_text("x")
    assert stat.S_IMODE(created.stat().st_mode) == 0o600


def test_check_deploy_is_clean_in_production():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "GASTOWN_SQLITE"))}
    env.update(
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres",
        REDIS_URL="redis://127.0.0.1:6379/9",
        SECRET_KEY="k" + os.urandom(32).hex(),
        DEBUG="0",
        ALLOWED_HOSTS="gastown.example.com",
        GASTOWN_DATA_DIR=str(settings.DATA_DIR / "deploy-check"),
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_a_login_without_a_role_reads_no_events(nobody):
    factories.convoy()
    response = nobody.get("/api/v1/events/")
    assert response.status_code == 403


@pytest.mark.parametrize("value", ["²", "\u0661", "9" * 5000, str(2**64), "-1"])
def test_bad_bead_references_in_bodies_are_400s(make_agent, value):
    agent, client = make_agent()
    rig = factories.rig(agent=agent)
    bead = client.post("/api/v1/beads/", {"title": "b", "rig": rig.id}, format="json").json()
    for url, body in [
        ("/api/v1/beads/", {"title": "x", "rig": rig.id, "blocks": [value]}),
        ("/api/v1/beads/", {"title": "x", "rig": rig.id, "discovered_from": value}),
        (f"/api/v1/beads/{bead['id']}/dependencies/", {"depends_on": value}),
    ]:
        response = client.post(url, body, format="json")
        assert response.status_code == 400, (url, value, response.content[:200])
        error_of(response)


def test_a_chunked_body_is_411_not_read_as_empty(operator):
    response = operator.generic(
        "POST",
        "/api/v1/beads/",
        b"",  # (what Django reads of a chunked body: nothing)
        content_type="application/json",
        HTTP_TRANSFER_ENCODING="chunked",
    )
    assert response.status_code == 411
    assert response.json()["error"]["code"] == "length_required"


@pytest.mark.parametrize("digits", ["\u0661\u0662", "\u00b2"])
def test_digits_other_than_ascii_are_refused_in_bodies_and_forms(operator, digits, client):
    """'١٢' is 12 to `int()`: the API, the board's forms and the admin take 0-9 only."""
    from django.contrib.auth import get_user_model

    response = operator.post(
        "/api/v1/budgets/",
        {"agent": "nobody", "limit_usd": digits, "limit_tokens": digits, "max_agents": digits},
        format="json",
    )
    assert response.status_code == 400
    fields = {e["field"] for e in response.json()["error"]["errors"]}
    assert {"limit_usd", "limit_tokens", "max_agents"} <= fields
    admin = get_user_model().objects.create_superuser("root", password="pw-123456789")
    client.force_login(admin)
    response = client.post(
        "/admin/runner/budget/add/", {"window": "day", "limit_usd": digits, "limit_tokens": ""}
    )
    assert response.status_code == 200 and "errornote" in response.content.decode()  # not saved
    if digits.isdecimal():  # ('²' is no number to Django at all)
        assert "digits in ASCII only" in response.content.decode()
