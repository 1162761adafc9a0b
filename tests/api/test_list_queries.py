"""A list's query string: only the parameters it documents (another is a 400 naming it and what
the list takes), and `search` / `ordering` where the board searches or sorts (convoys, rigs,
beads, merge requests, runs, repositories), in a number of queries that does not grow."""

import itertools
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from convoys import services
from rigs.models import Rig
from runner.models import AgentRun
from tests import factories
from tests.api.conftest import error_of

pytestmark = pytest.mark.django_db

LISTS = [
    "/api/v1/repositories/",
    "/api/v1/rigs/",
    "/api/v1/merge-requests/",
    "/api/v1/convoys/",
    "/api/v1/beads/",
    "/api/v1/beads/?ready=true",
    "/api/v1/beads/blocked/",
    "/api/v1/notifications/",
    "/api/v1/events/",
    "/api/v1/runs/",
]


def get(client, url: str, **params):
    return client.get(url, params) if params else client.get(url)


def ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


@pytest.fixture
def client(make_agent):
    return make_agent("lister")[1]


@pytest.mark.parametrize("url", [*LISTS, "comments"])
def test_unknown_query_parameters_are_refused_naming_them(client, url):
    if url == "comments":
        bead = services.bead_create(title="t", rig=factories.rig(state=Rig.State.WORKING))
        url = f"/api/v1/beads/{bead.short_id}/comments/"
    glue = "&" if "?" in url else "?"
    response = client.get(f"{url}{glue}serch=x")
    assert response.status_code == 400, (url, response.content)
    error = error_of(response)
    assert (error["field"], error["code"]) == ("serch", "unknown_parameter")
    assert error["message"].startswith("unknown query parameter 'serch'; this list takes: ")
    assert "limit" in error["message"] and "format" in error["message"]
    # each unknown one is an error of its own
    response = client.get(f"{url}{glue}serch=x&colour=red&limit=5")
    assert [e["field"] for e in error_of(response)["errors"]] == ["serch", "colour"]


@pytest.mark.parametrize("url", LISTS)
def test_pagination_and_format_are_taken(client, url):
    glue = "&" if "?" in url else "?"
    assert client.get(f"{url}{glue}limit=5&format=json").status_code == 200
    if "events" not in url:
        assert client.get(f"{url}{glue}offset=5").status_code == 200


def test_the_message_says_what_the_list_takes(client):
    message = error_of(client.get("/api/v1/convoys/?serch=auth"))["message"]
    taken = message.split("this list takes: ")[1].rstrip(".").split(", ")
    assert taken == ["format", "limit", "offset", "ordering", "repository", "search", "state"]
    message = error_of(client.get("/api/v1/events/?offset=3"))["message"]  # keyset pages
    assert "after, convoy, format, kind, limit, repository, rig." in message
    # a page number is not how this API pages: refused, not ignored
    assert error_of(client.get("/api/v1/rigs/?page=2"))["field"] == "page"


def test_one_object_is_not_a_list(client):
    rig = factories.rig()
    assert client.get(f"/api/v1/rigs/{rig.id}/?whatever=1").status_code == 200


# --- search and ordering ------------------------------------------------------------------------


def test_convoys_search_like_the_board_and_sort(client):
    repository = factories.repository()
    auth = factories.convoy(repository=repository, title="Build auth", slug="build-auth")
    docs = factories.convoy(repository=repository, title="Write docs", slug="docs")
    login = factories.convoy(repository=repository, title="Fix login", slug="fix-login")
    factories.leg(convoy=auth, key="api")
    factories.leg(convoy=docs, key="guide")
    factories.leg(convoy=docs, key="guide-2")  # (two matching legs: the convoy still once)
    url = "/api/v1/convoys/"
    assert ids(get(client, url, search="AUTH")) == [auth.id]
    assert ids(get(client, url, search="fix-log")) == [login.id]  # the slug
    assert ids(get(client, url, search="guide")) == [docs.id]  # a leg's key, exactly
    assert ids(get(client, url, search="gui")) == []
    assert ids(get(client, url, search="build auth")) == [auth.id]  # every word must match
    assert ids(get(client, url, search="build docs")) == []
    assert ids(get(client, url, ordering="title")) == [auth.id, login.id, docs.id]
    assert ids(get(client, url, ordering="-title")) == [docs.id, login.id, auth.id]
    assert ids(get(client, url)) == [login.id, docs.id, auth.id]  # newest first, as before
    assert ids(get(client, url, search="i", ordering="title")) == [auth.id, login.id, docs.id]
    response = get(client, url, ordering="title,-nope")
    error = error_of(response)
    assert response.status_code == 400 and error["field"] == "ordering"
    assert error["code"] == "invalid_choice"
    assert "'nope' is not a field this list sorts by; it sorts by: created_at" in error["message"]
    assert "title" in error["message"] and "spent_usd" in error["message"]


def test_rigs_search_and_sort(client):
    repository = factories.repository()
    ada, bob = factories.agent(name="ada"), factories.agent(name="bob")
    first = factories.rig(repository=repository, agent=bob, slug="api")
    second = factories.rig(repository=repository, agent=ada, slug="web")
    third = factories.rig(repository=repository, agent=ada, slug="docs")
    url = "/api/v1/rigs/"
    assert ids(get(client, url, search="ada")) == [second.id, third.id]
    assert ids(get(client, url, search="rig/ap")) == [first.id]  # the branch
    assert ids(get(client, url, ordering="agent,-slug")) == [second.id, third.id, first.id]
    assert ids(get(client, url, ordering="slug", repository=repository.id)) == [
        first.id,
        third.id,
        second.id,
    ]
    assert error_of(get(client, url, ordering="worktree_path"))["field"] == "ordering"


def test_beads_search_and_sort_ready_or_not(client):
    rig = factories.rig(state=Rig.State.WORKING)
    login = services.bead_create(title="Fix the login form", rig=rig, priority=3)
    logout = services.bead_create(title="Add logout", rig=rig, priority=1)
    other = services.bead_create(title="Write docs", rig=rig, priority=0)
    services.bead_dependency_add(bead=logout, depends_on=other)  # not ready
    url = "/api/v1/beads/"
    assert ids(get(client, url, rig=rig.id, search="log")) == [logout.id, login.id]
    assert ids(get(client, url, rig=rig.id, search="log", ready="true")) == [login.id]
    assert ids(get(client, url, search=other.short_id)) == [other.id]  # a short id, exactly
    assert ids(get(client, url, rig=rig.id, ordering="-priority")) == [
        login.id,
        logout.id,
        other.id,
    ]
    assert ids(get(client, url, rig=rig.id, ordering="title")) == [logout.id, login.id, other.id]
    assert error_of(get(client, url, ordering="rig"))["field"] == "ordering"
    assert error_of(get(client, url, search="a\x00b"))["field"] == "search"


def test_merge_requests_runs_and_repositories_search_and_sort(client, viewer):
    repository = factories.repository(name="shop")
    factories.repository(name="blog")
    api = factories.rig(repository=repository, slug="api", agent=factories.agent(name="ada"))
    web = factories.rig(repository=repository, slug="web", agent=factories.agent(name="bob"))
    mr_api = factories.merge_request(rig=api, priority=3)
    mr_web = factories.merge_request(rig=web, priority=1)
    url = "/api/v1/merge-requests/"
    assert ids(get(client, url, search="web")) == [mr_web.id]
    assert ids(get(client, url, ordering="priority")) == [mr_web.id, mr_api.id]
    assert ids(get(client, url)) == [mr_web.id, mr_api.id]  # newest first, as before

    now = timezone.now()
    started = AgentRun.objects.create(
        rig=api, agent=api.agent, command="x", state="running", started_at=now,
        cost_usd=Decimal("2.5"), reason="fix the tests",
    )  # fmt: skip
    queued = AgentRun.objects.create(rig=web, agent=web.agent, command="x", reason="launch")
    url = "/api/v1/runs/"  # (a person: agents see only their own runs)
    assert ids(get(viewer, url, search="bob")) == [queued.id]
    assert ids(get(viewer, url, search="tests")) == [started.id]  # the reason
    assert ids(get(viewer, url, ordering="-cost_usd")) == [started.id, queued.id]
    # never started: last, either way
    assert ids(get(viewer, url, ordering="started_at")) == [started.id, queued.id]
    assert ids(get(viewer, url, ordering="-started_at")) == [started.id, queued.id]

    url = "/api/v1/repositories/"
    assert [r["name"] for r in get(client, url, search="sho").json()["results"]] == ["shop"]
    assert [r["name"] for r in get(client, url, ordering="-name").json()["results"]] == [
        "shop",
        "blog",
    ]


# --- query counts -------------------------------------------------------------------------------


_seq = itertools.count(1)


def fill(n: int, agent) -> None:
    """n of everything, all matching `?search=x`."""
    repository = factories.repository(name=f"x-repo-{next(_seq)}")
    for i in range(n):
        factories.repository(name=f"x-more-{next(_seq)}")
        slug = f"x{i}-{next(_seq)}"
        rig = factories.rig(repository=repository, agent=agent, slug=slug, state=Rig.State.WORKING)
        services.bead_create(title=f"x bead {i}", rig=rig, priority=i % 5)
        factories.merge_request(rig=rig, priority=i % 5)
        AgentRun.objects.create(rig=rig, agent=agent, command="x", reason=f"x {i}")
        services.convoy_create(
            title=f"x convoy {i}", repository=repository,
            legs=[{"key": "a", "title": "A", "rig": rig.id}],
        )  # fmt: skip


SEARCHED = [
    "/api/v1/repositories/?search=x&ordering=-name",
    "/api/v1/rigs/?search=x&ordering=agent,-slug",
    "/api/v1/merge-requests/?search=x&ordering=-priority",
    "/api/v1/convoys/?search=x&ordering=title",
    "/api/v1/convoys/?search=a&ordering=-created_at",  # (a leg's key: a subquery, not a join)
    "/api/v1/beads/?search=x&ordering=-priority,title",
    "/api/v1/beads/?ready=true&search=bead&ordering=title",
    "/api/v1/runs/?search=x&ordering=-created_at",
]


@pytest.mark.parametrize("url", SEARCHED)
def test_search_and_ordering_queries_do_not_grow(make_agent, url, django_assert_max_num_queries):
    agent, client = make_agent("x-agent")
    fill(2, agent)
    with CaptureQueriesContext(connection) as small:
        response = client.get(url)
    assert response.status_code == 200 and response.json()["count"] >= 2, response.content
    fill(20, agent)
    with django_assert_max_num_queries(len(small)):
        response = client.get(url)
    assert response.status_code == 200 and response.json()["count"] >= 22
    assert len(small) <= 7, [q["sql"] for q in small.captured_queries]


def test_every_query_problem_is_named_at_once(operator):
    """Unknown names, a bad filter value, a bad ordering, a bad limit, a parameter given twice
    and non-ASCII digits: one 400 names them all (not one per round trip)."""
    client = operator
    response = client.get(
        "/api/v1/rigs/?ordering=nope&state=zz&bogus=1&limit=abc&offset=-1&repository=%D9%A1"
        "&slug=a&slug=b"
    )
    assert response.status_code == 400
    fields = {e["field"] for e in response.json()["error"]["errors"]}
    assert fields == {
        "ordering",
        "state",
        "bogus",
        "limit",
        "offset",
        "repository",
        "slug",
    }
    response = client.get("/api/v1/beads/?rig=x&ready=maybe&bogus=1&ordering=nope&limit=0")
    assert response.status_code == 400
    fields = {e["field"] for e in response.json()["error"]["errors"]}
    assert fields == {"rig", "ready", "bogus", "ordering", "limit"}
    response = client.get("/api/v1/events/?after=x&limit=y&bogus=1")
    fields = {e["field"] for e in response.json()["error"]["errors"]}
    assert response.status_code == 400 and fields == {"after", "limit", "bogus"}
    response = client.get("/api/v1/rigs/?format=bogus")
    assert response.status_code == 400 and error_of(response)["field"] == "format"
    # a multiple-choice filter may repeat; a limit past the maximum is clamped, not refused
    assert client.get("/api/v1/convoys/?state=draft&state=landed&limit=100000").status_code == 200
