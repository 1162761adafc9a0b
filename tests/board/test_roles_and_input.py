"""Who may see the board at all (a login is not a role), and bad numbers in its query strings
and forms: a 400 naming the field, never a 500."""

from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from board.urls import urlpatterns as board_urlpatterns
from convoys.models import Convoy, ReviewComment
from rigs.models import Rig
from runner.models import AgentRun, Budget
from tests import factories

pytestmark = pytest.mark.django_db

JSON = {"HTTP_ACCEPT": "application/json"}
TOO_BIG = "18446744073709551616"  # 2^64: past SQLite's and PostgreSQL's integers


@pytest.fixture
def scenery():
    """One real object of each kind a board URL names."""
    repo = factories.repository(name="app")
    rig = factories.rig(
        repository=repo,
        slug="api",
        state=Rig.State.READY,
        agent=factories.agent(name="alice", runtime_command="echo hi"),
    )
    convoy = factories.convoy(repository=repo, title="Auth system")
    leg = factories.leg(convoy=convoy, key="api", rig=rig)
    mr = factories.merge_request(rig=rig, repository=repo)
    review = ReviewComment.objects.create(rig=rig, author="olive", text="hm")
    run = AgentRun.objects.create(
        rig=rig, agent=rig.agent, command="echo hi", state=AgentRun.State.QUEUED
    )
    return {
        "board": None,
        "convoy": convoy.id,
        "rig": rig.id,
        "run": run.id,
        "notification": factories.notification(rig=rig).id,
        "leg": leg.id,
        "mr": mr.id,
        "review": review.id,
        "repositories": None,
        "merge": repo.id,
        "budget": Budget.objects.create(
            scope=Budget.Scope.AGENT, agent=rig.agent, limit_usd=Decimal("5")
        ).id,
    }


def board_urls(scenery) -> list[str]:
    """Every URL of the board's urlpatterns, with the id of a real object where it takes one."""
    urls = []
    for pattern in board_urlpatterns:
        kwargs = {}
        if "pk" in pattern.pattern.converters:
            kind = pattern.name.split("-")[0]
            kind = "convoy" if pattern.name == "board-card" else kind
            kwargs["pk"] = scenery[kind]
        urls.append(reverse(f"board:{pattern.name}", kwargs=kwargs))
    assert len(urls) == len(board_urlpatterns) > 20
    return urls


@pytest.fixture
def nobody_client(client, django_user_model):
    """A login in no role group (and not staff)."""
    client.force_login(django_user_model.objects.create_user("nora", password="pw-nora-123456"))
    return client


# --- roles ---


def test_a_login_without_a_role_gets_403_on_every_board_url(nobody_client, scenery):
    for url in board_urls(scenery):
        for method, extra in (("get", {}), ("post", {}), ("post", JSON)):
            response = getattr(nobody_client, method)(url, **extra)
            assert response.status_code == 403, (method, url, response.status_code)
            if extra:
                assert response.json()["error"]["code"] == "no_role"
    page = nobody_client.get("/").content.decode()
    assert "has no role" in page and "Auth system" not in page
    assert Convoy.objects.get(pk=scenery["convoy"]).state == Convoy.State.DRAFT
    assert AgentRun.objects.get(pk=scenery["run"]).state == AgentRun.State.QUEUED


def test_anonymous_people_are_sent_to_the_login_page_from_every_board_url(client, scenery):
    for url in board_urls(scenery):
        for method in ("get", "post"):
            response = getattr(client, method)(url)
            assert response.status_code == 302, (method, url)
            assert response["Location"].startswith("/login/?next=")


def test_a_viewer_reads_every_board_page(viewer_client, scenery):
    posts = {"move", "launch", "cancel", "landing-retry", "merge", "retry", "sync", "teardown"}
    posts |= {"stop", "ack", "new", "import", "add", "answer", "set", "delete"}
    posts |= {"review", "reply", "resolve", "approve", "request-changes"}
    # a diff's file takes ?path= and needs git (tests/board/test_diff.py); a leg's diff redirects
    for url in board_urls(scenery):
        if url.rstrip("/").rsplit("/", 1)[-1] in posts or url.endswith("/diff/file/"):
            continue
        assert viewer_client.get(url).status_code in (200, 204, 302), url


def test_a_role_granted_later_opens_the_board(nobody_client, django_user_model):
    assert nobody_client.get("/").status_code == 403
    user = django_user_model.objects.get(username="nora")
    user.groups.add(Group.objects.get_or_create(name="viewer")[0])
    assert nobody_client.get("/").status_code == 200


# --- numbers in query strings ---


@pytest.mark.parametrize("value", ["²", TOO_BIG, "9" * 5000, "-1", "0", "3x"])
@pytest.mark.parametrize("path", ["/", "/board/columns/", "card"])
def test_a_bad_repository_filter_is_a_400_naming_the_field(viewer_client, scenery, path, value):
    url = f"/board/card/{scenery['convoy']}/" if path == "card" else path
    response = viewer_client.get(url, {"repository": value})
    assert response.status_code == 400
    assert (
        "repository:" in response.content.decode() and "is not an id" in response.content.decode()
    )
    body = viewer_client.get(url, {"repository": value}, **JSON).json()
    assert body["error"]["field"] == "repository" and body["error"]["code"] == "invalid"


def test_a_good_repository_filter_still_filters(viewer_client, scenery):
    assert viewer_client.get("/", {"repository": str(scenery["merge"])}).status_code == 200
    assert viewer_client.get("/", {"repository": ""}).status_code == 200


@pytest.mark.parametrize("url", ["/convoys/{}/", "/rigs/{}/", "/repositories/{}/queue/"])
def test_an_id_past_the_database_range_in_a_path_is_a_404(viewer_client, url):
    assert viewer_client.get(url.format(TOO_BIG)).status_code == 404
    assert viewer_client.get(url.format("9" * 5000)).status_code == 404


# --- numbers in the new-convoy form ---


def convoy_form(repository: str, assignee: str) -> dict:
    return {
        "title": "Auth",
        "repository": repository,
        "leg_key": ["api"],
        "leg_title": ["API"],
        "leg_assignee": [assignee],
        "leg_depends_on": [""],
    }


@pytest.mark.parametrize("value", ["²", TOO_BIG, "9" * 5000])
def test_a_bad_repository_in_the_new_convoy_form_is_shown_beside_it(
    operator_client, scenery, value
):
    response = operator_client.post("/convoys/new/", convoy_form(value, "agent:alice"))
    assert response.status_code == 400
    html = response.content.decode()
    assert 'id="err-repository"' in html and "is not an id" in html
    assert not Convoy.objects.filter(title="Auth").exists()


def test_an_unknown_repository_in_the_new_convoy_form_is_shown_beside_it(operator_client, scenery):
    response = operator_client.post("/convoys/new/", convoy_form("999999", "agent:alice"))
    assert response.status_code == 400
    assert 'id="err-repository"' in response.content.decode()


@pytest.mark.parametrize(
    "assignee", ["rig:²", f"rig:{TOO_BIG}", "rig:" + "9" * 5000, "rig:", "x:y"]
)
def test_a_bad_leg_assignee_is_shown_on_its_row(operator_client, scenery, assignee):
    response = operator_client.post("/convoys/new/", convoy_form(str(scenery["merge"]), assignee))
    assert response.status_code == 400
    rows = response.content.decode().split("data-leg-row")[1:]
    assert "field-error" in rows[0] and 'aria-invalid="true"' in rows[0]
    assert not Convoy.objects.filter(title="Auth").exists()


def test_a_rig_of_the_form_is_given_by_its_id(operator_client, scenery):
    response = operator_client.post(
        "/convoys/new/", convoy_form(str(scenery["merge"]), f"rig:{scenery['rig']}")
    )
    assert response.status_code == 302
    convoy = Convoy.objects.get(title="Auth")
    assert convoy.legs.get().rig_id == scenery["rig"]


def test_the_new_convoy_form_sets_no_command_the_server_runs(operator_client):
    """Issue 15 item 2 on the board: no board form carries a command field (they are set by
    admins in the admin); the page offers none, and posting one changes nothing."""
    from board import forms

    fields = {*forms.ConvoyForm.base_fields, *forms.LegForm.base_fields}
    commands = {"gate_command", "setup_command", "runtime_command", "copy_files", "link_files"}
    assert not fields & commands


@pytest.mark.parametrize("target", ["²", "0", "-1", "abc", "board:board", "//evil.example/x"])
def test_a_bad_next_or_referer_goes_back_to_the_page_not_a_500(operator_client, scenery, target):
    rig = scenery["rig"]
    response = operator_client.post(f"/rigs/{rig}/sync/", {"next": target})
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/")
    assert not response.headers["Location"].startswith("//")
    response = operator_client.post(f"/rigs/{rig}/sync/", HTTP_REFERER=target)
    assert response.status_code == 302
