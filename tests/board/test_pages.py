"""The board's pages and the views behind their controls (Django's test client; no browser)."""

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from convoys import services as convoy_services
from convoys.models import Convoy, Leg, LegDependency
from rigs.models import MergeRequest, Rig
from tests import factories
from tests.board.helpers import bulk_convoys

pytestmark = pytest.mark.django_db

JSON = {"HTTP_ACCEPT": "application/json"}


def card_ids(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'<article class="card [^"]*" id="convoy-(\d+)"', html)]


def column_of(html: str, convoy_id: int) -> str:
    """The column a card was rendered in."""
    position = html.index(f'id="convoy-{convoy_id}"')
    return re.findall(r'data-column="(\w+)"', html[:position])[-1]


@pytest.fixture
def repo():
    return factories.repository(name="app")


@pytest.fixture
def draft(repo):
    """A draft convoy: api (on a ready rig) then docs (after api)."""
    rig = factories.rig(repository=repo, slug="api", state=Rig.State.READY)
    convoy = factories.convoy(repository=repo, title="Auth system")
    api = factories.leg(convoy=convoy, key="api", rig=rig)
    docs = factories.leg(convoy=convoy, key="docs", rig=factories.rig(repository=repo))
    LegDependency.objects.create(leg=docs, depends_on=api)
    return convoy


# --- login and roles ---


@pytest.mark.parametrize(
    "url", ["/", "/board/columns/", "/board/card/1/", "/convoys/1/", "/rigs/1/", "/repositories/"]
)
def test_pages_need_a_login(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


def test_login_page_logs_in_and_lands_on_the_board(client, operator):
    assert client.get("/login/").status_code == 200
    response = client.post("/login/", {"username": "olive", "password": "pw-board-123456"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200


def test_viewer_sees_no_controls_and_may_not_use_them(viewer_client, draft):
    html = viewer_client.get("/").content.decode()
    assert f'id="convoy-{draft.id}"' in html
    assert "data-draggable" not in html and 'class="move"' not in html
    assert "New convoy" not in html
    page = viewer_client.get(f"/convoys/{draft.id}/").content.decode()
    assert "Launch" not in page and "Cancel convoy" not in page
    assert viewer_client.get("/convoys/new/").status_code == 403
    response = viewer_client.post(f"/convoys/{draft.id}/move/", {"to": "launched"}, **JSON)
    assert response.status_code == 403
    assert viewer_client.post(f"/convoys/{draft.id}/launch/").status_code == 403
    rig = draft.legs.first().rig
    for action in ("merge", "retry", "sync", "teardown"):
        assert viewer_client.post(f"/rigs/{rig.id}/{action}/").status_code == 403
    draft.refresh_from_db()
    assert draft.state == Convoy.State.DRAFT


def test_operator_sees_the_controls(operator_client, draft):
    html = operator_client.get("/").content.decode()
    assert "data-draggable" in html and 'class="move"' in html
    assert "Launch" in operator_client.get(f"/convoys/{draft.id}/").content.decode()


# --- the board ---


def test_board_of_500_convoys_renders_in_a_bounded_number_of_queries(
    operator_client, repo, django_assert_max_num_queries
):
    agent = factories.agent(name="alice")
    states = {"draft": 150, "launched": 150, "blocked": 100, "landing": 50, "landed": 50}
    convoys = bulk_convoys(repo, states, legs_per_convoy=5, agent=agent)
    assert Leg.objects.count() == 2500
    # session, user, roles + 10 for the board (see board.pages.board_page; the 10th counts
    # the agents running per convoy, for every card at once) + the header's escalations count
    with django_assert_max_num_queries(14):
        response = operator_client.get("/")
    html = response.content.decode()
    assert sorted(card_ids(html)) == sorted(c.id for c in convoys)
    assert html.count('class="chip ') == 2500
    blocked = next(c for c in convoys if c.state == "blocked")
    assert column_of(html, blocked.id) == "blocked"
    card = html[html.index(f'id="convoy-{blocked.id}"') :]
    assert "leg-0 rig" in card[:3000] and "is failed" in card[:3000]
    # the same bound with every filter on
    with django_assert_max_num_queries(15):  # + the cancelled column
        operator_client.get(f"/?repository={repo.id}&agent=alice&q=bulk&cancelled=1")
    with django_assert_max_num_queries(13):
        operator_client.get("/board/columns/")


def test_card_shows_progress_chips_blocked_reason_and_unacked(operator_client, repo):
    convoy = factories.convoy(repository=repo, title="Payments", state=Convoy.State.BLOCKED)
    dead = factories.rig(repository=repo, slug="pay-api", state=Rig.State.FAILED)
    done = factories.rig(repository=repo, slug="pay-ui", state=Rig.State.MERGED)
    factories.leg(convoy=convoy, key="api", rig=dead, state=Leg.State.READY)
    factories.leg(convoy=convoy, key="ui", rig=done, state=Leg.State.LANDED)
    factories.leg(convoy=convoy, key="old", state=Leg.State.CANCELLED)
    factories.notification(rig=dead, severity="warning")
    factories.notification(rig=dead, severity="critical")
    factories.notification(rig=dead, severity="info")  # asks for nothing: not counted
    html = operator_client.get(f"/board/card/{convoy.id}/").content.decode()
    assert 'data-state="blocked"' in html
    assert "1/2 legs landed" in html  # the cancelled leg is left out
    assert "chip r-failed" in html and "chip r-merged landed" in html and "chip r-none" in html
    assert "Blocked:</strong> api rig pay-api is failed" in html
    assert "2 to act on" in html


def test_filters_by_repository_agent_and_text(operator_client, repo):
    other = factories.repository(name="web")
    alice = factories.agent(name="alice")
    mine = factories.convoy(repository=repo, title="Search index")
    factories.leg(convoy=mine, key="idx", rig=factories.rig(repository=repo, agent=alice))
    theirs = factories.convoy(repository=other, title="Landing page")
    factories.leg(convoy=theirs, key="page", agent=factories.agent(name="bob"))

    def shown(query):
        return set(card_ids(operator_client.get(f"/?{query}").content.decode()))

    assert shown("") == {mine.id, theirs.id}
    assert shown(f"repository={other.id}") == {theirs.id}
    assert shown("agent=alice") == {mine.id}
    assert shown("agent=bob") == {theirs.id}
    assert shown("q=search") == {mine.id}
    assert shown("q=page") == {theirs.id}  # a leg key
    # a card the page's filters hide answers 204, so the live update drops it
    assert operator_client.get(f"/board/card/{mine.id}/?agent=bob").status_code == 204


def test_cancelled_convoys_hide_behind_the_toggle(operator_client, repo):
    gone = factories.convoy(repository=repo, state=Convoy.State.CANCELLED)
    assert gone.id not in card_ids(operator_client.get("/").content.decode())
    html = operator_client.get("/?cancelled=1").content.decode()
    assert column_of(html, gone.id) == "cancelled"
    assert operator_client.get(f"/board/card/{gone.id}/").status_code == 204
    assert operator_client.get(f"/board/card/{gone.id}/?cancelled=1").status_code == 200


def test_board_renders_the_last_event_id_and_subscribes_to_the_board(operator_client, repo):
    event = factories.event()
    html = operator_client.get("/").content.decode()
    assert f'data-groups="board" data-last-event="{event.id}"' in html


# --- moving cards ---


def test_drag_draft_to_launched_launches(operator_client, draft):
    response = operator_client.post(f"/convoys/{draft.id}/move/", {"to": "launched"}, **JSON)
    assert response.status_code == 200, response.content
    assert response.json()["ok"] is True
    draft.refresh_from_db()
    assert draft.state == Convoy.State.LAUNCHED
    assert draft.legs.get(key="api").state == Leg.State.READY


@pytest.mark.parametrize(
    ("to", "reason"),
    [
        ("landing", "landing is derived from the merge queue; it cannot be dragged"),
        ("blocked", "blocked is derived from the legs"),
        ("landed", "a convoy lands when its last merge lands"),
        ("draft", "cannot go back to draft"),
        ("nowhere", "unknown column"),
    ],
)
def test_a_refused_move_answers_409_with_the_reason_and_the_real_state(
    operator_client, draft, to, reason
):
    convoy_services.convoy_launch(convoy=draft)
    response = operator_client.post(f"/convoys/{draft.id}/move/", {"to": to}, **JSON)
    assert response.status_code == 409
    assert reason in response.json()["error"]["message"]
    assert response.json()["state"] == "launched"


def test_launching_twice_is_refused_by_the_state_machine(operator_client, draft):
    convoy_services.convoy_launch(convoy=draft)
    response = operator_client.post(f"/convoys/{draft.id}/launch/", **JSON)
    assert response.status_code == 409
    assert "only a draft launches" in response.json()["error"]["message"]


def test_drag_to_cancelled_cancels_and_a_landed_convoy_refuses(operator_client, draft, repo):
    response = operator_client.post(f"/convoys/{draft.id}/move/", {"to": "cancelled"}, **JSON)
    assert response.status_code == 200
    draft.refresh_from_db()
    assert draft.state == Convoy.State.CANCELLED
    assert set(draft.legs.values_list("state", flat=True)) == {Leg.State.CANCELLED}
    landed = factories.convoy(repository=repo, state=Convoy.State.LANDED)
    response = operator_client.post(f"/convoys/{landed.id}/move/", {"to": "cancelled"}, **JSON)
    assert response.status_code == 409
    assert "cannot go from 'landed' to 'cancelled'" in response.json()["error"]["message"]


def test_a_launch_the_services_refuse_shows_their_message(operator_client, repo):
    convoy = factories.convoy(repository=repo)
    factories.leg(convoy=convoy, key="api")  # no rig, no agent
    response = operator_client.post(f"/convoys/{convoy.id}/move/", {"to": "launched"}, **JSON)
    assert response.status_code == 400
    assert "legs[0].agent: no rig and no active agent" in response.json()["error"]["message"]
    assert response.json()["state"] == "draft"


def test_a_plain_form_post_redirects_back_with_the_message(operator_client, draft):
    response = operator_client.post(
        f"/convoys/{draft.id}/move/", {"to": "landing", "next": "/"}, follow=True
    )
    assert response.redirect_chain[-1][0] == "/"
    assert "landing is derived from the merge queue" in response.content.decode()


# --- creating a convoy ---


def leg_rows(*rows):
    data = {"leg_key": [], "leg_title": [], "leg_assignee": [], "leg_depends_on": []}
    for key, title, assignee, depends in rows:
        data["leg_key"].append(key)
        data["leg_title"].append(title)
        data["leg_assignee"].append(assignee)
        data["leg_depends_on"].append(depends)
    return data


def test_create_a_convoy_from_the_form(operator_client, repo):
    rig = factories.rig(repository=repo, slug="api", state=Rig.State.READY)
    factories.agent(name="bob")
    page = operator_client.get("/convoys/new/").content.decode()
    assert f'value="rig:{rig.id}"' in page and 'value="agent:bob"' in page
    data = {
        "title": "Auth system",
        "repository": str(repo.id),
        **leg_rows(
            ("api", "API endpoints", f"rig:{rig.id}", ""),
            ("", "", "", ""),
            ("docs", "Docs", "agent:bob", "api"),
        ),
    }
    response = operator_client.post("/convoys/new/", data)
    convoy = Convoy.objects.get(title="Auth system")
    assert response.status_code == 302 and response["Location"] == f"/convoys/{convoy.id}/"
    assert convoy.state == Convoy.State.DRAFT
    docs = convoy.legs.get(key="docs")
    assert docs.agent.name == "bob" and [d.key for d in docs.depends_on.all()] == ["api"]


def test_the_form_shows_each_error_beside_its_field(operator_client, repo):
    data = {
        "title": "Auth",
        "repository": str(repo.id),
        **leg_rows(
            ("", "", "", ""),
            ("api", "API", "agent:nobody", ""),
            ("docs", "Docs", "agent:nobody", "api, schema"),
        ),
    }
    response = operator_client.post("/convoys/new/", data)
    assert response.status_code == 400
    html = response.content.decode()
    assert not Convoy.objects.exists()
    rows = html.split("data-leg-row")[1:]
    # the form's second row is the service's legs[0]: each message lands on its own row
    assert "unknown agent &#x27;nobody&#x27;" in rows[1] and "unknown agent" in rows[2]
    assert "unknown leg &#x27;schema&#x27;" in rows[2]
    assert "unknown leg" not in rows[1] and "field-error" not in rows[0]
    assert 'value="api, schema"' in rows[2]  # what was typed stays


def test_the_form_shows_convoy_errors_beside_their_fields(operator_client, repo):
    data = {"title": "", "repository": "", **leg_rows(("api", "API", "", ""))}
    html = operator_client.post("/convoys/new/", data).content.decode()
    assert 'id="err-repository"' in html and "choose a repository" in html
    data["repository"] = str(repo.id)
    html = operator_client.post("/convoys/new/", data).content.decode()
    assert 'id="err-title"' in html and "a convoy needs a title" in html


def test_the_form_refuses_a_dependency_cycle(operator_client, repo):
    factories.agent(name="bob")
    data = {
        "title": "Loop",
        "repository": str(repo.id),
        **leg_rows(("a", "A", "agent:bob", "b"), ("b", "B", "agent:bob", "a")),
    }
    html = operator_client.post("/convoys/new/", data).content.decode()
    assert "dependency cycle: a -&gt; b -&gt; a" in html


# --- the convoy page ---


def test_convoy_page_shows_legs_waves_and_the_cascade_feed(operator_client, draft, repo):
    convoy_services.convoy_launch(convoy=draft)
    api = draft.legs.get(key="api")
    factories.merge_request(rig=api.rig, state=MergeRequest.State.TESTING)
    html = operator_client.get(f"/convoys/{draft.id}/").content.decode()
    assert 'data-groups="convoy.' in html and f"rig.{api.rig_id}" in html
    assert "Wave 1 · 1 leg" in html and "Wave 2 · 1 leg" in html
    assert html.count('class="node s-') == 2 and html.count('class="edge') == 1
    assert "testing" in html and "Request merge" not in html  # a merge is already running
    assert "Start leg api." in html  # the assignment notification, in the cascade feed
    live = operator_client.get(f"/convoys/{draft.id}/live/").content.decode()
    assert live.startswith('<div class="live-root"')


def test_convoy_page_graph_is_readable_at_20_legs_in_bounded_queries(
    operator_client, repo, django_assert_max_num_queries
):
    convoy = factories.convoy(repository=repo, title="Big")
    legs = [
        factories.leg(
            convoy=convoy, key=f"leg-{n:02d}", position=n, rig=factories.rig(repository=repo)
        )
        for n in range(20)
    ]
    for n, leg in enumerate(legs[5:], start=5):  # four waves of five
        LegDependency.objects.create(leg=leg, depends_on=legs[n - 5])
        if n % 5:
            LegDependency.objects.create(leg=leg, depends_on=legs[n - 6])
    with django_assert_max_num_queries(14):
        html = operator_client.get(f"/convoys/{convoy.id}/").content.decode()
    assert html.count('class="node s-') == 20
    assert html.count('class="wave-label"') == 4
    width, height = map(
        int, re.search(r'<svg class="graph" width="(\d+)" height="(\d+)"', html).groups()
    )
    # boxes keep their size (no shrinking to fit): 4 columns, 5 rows
    assert width == 12 * 2 + 4 * 184 + 3 * 76
    assert height == 12 * 2 + 26 + 5 * 48 + 4 * 14


# --- the rig page ---


def test_rig_page_shows_files_beads_inbox_and_merge_requests(
    operator_client, repo, django_assert_max_num_queries
):
    rig = factories.rig(
        repository=repo,
        slug="api",
        state=Rig.State.WORKING,
        worktree_path="/srv/worktrees/app/api",
        ahead=2,
        changed_files=[
            {"path": "auth/views.py", "added": 12, "deleted": 3, "status": "M"},
            {"path": "auth/new.py", "added": 40, "deleted": 0, "status": "A"},
        ],
    )
    parent = factories.bead(rig=rig, title="Parent epic")
    ready = factories.bead(rig=rig, title="Write the endpoint")
    blocked = factories.bead(rig=rig, title="Wire the UI")
    convoy_services.bead_dependency_add(bead=blocked, depends_on=parent, type="blocks")
    factories.bead(rig=rig, title="Old task", status="closed")
    factories.notification(rig=rig, summary="Base moved under you", action="Rebase onto main")
    factories.merge_request(
        rig=rig, state=MergeRequest.State.FAILED, gate_log_tail="FAILED test_login", reason="gate"
    )
    # + the beads' comments and the header's escalations count
    with django_assert_max_num_queries(17):
        html = operator_client.get(f"/rigs/{rig.id}/").content.decode()
    assert "/srv/worktrees/app/api" in html and "auth/new.py" in html
    assert "+52" in html and "\u22123" in html
    lanes = {
        m[0]: m[1] for m in re.findall(r'lane-(\w+)">\s*<h3>.*?class="count">(\d+)<', html, re.S)
    }
    assert lanes == {"ready": "2", "in_progress": "0", "blocked": "1", "closed": "1"}
    assert f"blocked by {parent.short_id} (open)" in html
    assert ready.title in html
    assert "Base moved under you" in html and "Rebase onto main" in html
    assert "FAILED test_login" in html
    assert "Request merge → main" in html


def test_rig_page_shows_when_a_claims_lease_lapses(operator_client, repo):
    from datetime import timedelta

    from django.utils import timezone

    rig = factories.rig(repository=repo, slug="api", state=Rig.State.WORKING)
    held = convoy_services.bead_create(title="Held", rig=rig)
    gone = convoy_services.bead_create(title="Gone quiet", rig=rig)
    for bead in (held, gone):
        convoy_services.bead_claim(bead=bead, agent=rig.agent)
    now = timezone.now()
    type(held).objects.filter(pk=held.pk).update(
        lease_expires_at=now + timedelta(minutes=8, seconds=30)
    )
    type(gone).objects.filter(pk=gone.pk).update(lease_expires_at=now - timedelta(minutes=2))
    html = operator_client.get(f"/rigs/{rig.id}/").content.decode()
    assert "· lease expires in 8m</span>" in html
    assert "· lease lapsed 2m ago</span>" in html


def test_teardown_refusal_is_shown_as_a_message(operator_client, repo):
    rig = factories.rig(repository=repo, slug="api", state=Rig.State.WORKING, ahead=3)
    response = operator_client.post(f"/rigs/{rig.id}/teardown/", **JSON)
    assert response.status_code == 409
    assert "Refusing to tear down rig api: 3 commit(s)" in response.json()["error"]["message"]
    page = operator_client.post(f"/rigs/{rig.id}/teardown/", follow=True).content.decode()
    assert "Refusing to tear down rig api" in page
    rig.refresh_from_db()
    assert rig.state == Rig.State.WORKING


def test_request_merge_targets_the_legs_merge_target(operator_client, repo):
    rig = factories.rig(repository=repo, slug="api", state=Rig.State.WORKING, head_commit="b" * 40)
    convoy = factories.convoy(
        repository=repo, slug="auth", state=Convoy.State.LAUNCHED, use_integration_branch=True
    )
    factories.leg(convoy=convoy, key="api", rig=rig, state=Leg.State.WORKING)
    response = operator_client.post(f"/rigs/{rig.id}/merge/", **JSON)
    assert response.status_code == 200, response.content
    mr = MergeRequest.objects.get(rig=rig)
    assert (mr.source_branch, mr.target_branch) == ("rig/api", "convoy/auth")
    assert mr.requested_by == "olive"
    # the same branch being checked right now: refused with the reason
    MergeRequest.objects.filter(pk=mr.pk).update(state=MergeRequest.State.CHECKING)
    response = operator_client.post(f"/rigs/{rig.id}/merge/", **JSON)
    assert response.status_code == 409
    assert "is checking" in response.json()["error"]["message"]


def test_retry_a_failed_rig_and_ack_a_notification(operator_client, repo):
    rig = factories.rig(repository=repo, state=Rig.State.FAILED, failure_reason="boom")
    assert operator_client.post(f"/rigs/{rig.id}/retry/", **JSON).status_code == 200
    rig.refresh_from_db()
    assert rig.state == Rig.State.REQUESTED
    response = operator_client.post(f"/rigs/{rig.id}/retry/", **JSON)
    assert response.status_code == 409  # requested cannot be retried
    note = factories.notification(rig=rig)
    assert operator_client.post(f"/notifications/{note.id}/ack/", **JSON).status_code == 200
    note.refresh_from_db()
    assert note.acked_at is not None


# --- the merge queue page ---


def test_merge_queue_page_shows_each_stage_with_timings(
    operator_client, repo, django_assert_max_num_queries
):
    from datetime import timedelta

    from django.utils import timezone

    now = timezone.now()
    S = MergeRequest.State
    made = {}
    for n, state in enumerate([S.QUEUED, S.CHECKING, S.TESTING, S.MERGED, S.FAILED, S.CONFLICTED]):
        rig = factories.rig(repository=repo, slug=f"r{n}")
        made[state] = factories.merge_request(
            rig=rig,
            state=state,
            started_at=None if state == S.QUEUED else now - timedelta(seconds=30),
            finished_at=now if state in (S.MERGED, S.FAILED, S.CONFLICTED) else None,
            gate_seconds=12.5 if state in (S.MERGED, S.FAILED) else None,
        )
    with django_assert_max_num_queries(10):
        html = operator_client.get(f"/repositories/{repo.id}/queue/").content.decode()
    for state, mr in made.items():
        assert f'id="mr-{mr.id}"' in html, state
    for section in ("Queued", "Batched", "Testing", "Landed", "Failed or conflicted"):
        assert f">{section}" in html
    assert "12s" in html  # gate time
    assert "gate running" in html  # the testing request's bar
    assert 'data-groups="repository.' in html
    listing = operator_client.get("/repositories/").content.decode()
    assert f"/repositories/{repo.id}/queue/" in listing


def test_the_favicon_is_linked_from_the_board_and_the_admin_and_answers_at_favicon_ico(
    client, admin_client
):
    icon = "/static/gastown/favicon.svg"
    link = f'<link rel="icon" href="{icon}" type="image/svg+xml">'
    assert link in client.get("/login/").content.decode()  # the board's base template
    assert link in client.get("/admin/login/").content.decode()
    admin_page = admin_client.get("/admin/rigs/rig/add/").content.decode()  # extends extrahead
    assert link in admin_page and "jsi18n" in admin_page
    assert "Django administration" in admin_page  # the admin's own base_site is kept
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"] == icon
    svg = client.get(icon)
    assert svg.status_code == 200 and svg["Content-Type"] == "image/svg+xml"
    assert b"<title>Gas Town</title>" in b"".join(svg.streaming_content)


def test_healthz_needs_no_login(client, settings):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["version"] == settings.GASTOWN_VERSION


def test_pages_make_no_query_per_row(operator_client, repo):
    """The convoy page's query count does not grow with its legs."""
    small = factories.convoy(repository=repo)
    big = factories.convoy(repository=repo)
    for convoy, n in ((small, 2), (big, 12)):
        for i in range(n):
            factories.leg(convoy=convoy, key=f"l{i}", rig=factories.rig(repository=repo))
    counts = []
    for convoy in (small, big):
        with CaptureQueriesContext(connection) as ctx:
            operator_client.get(f"/convoys/{convoy.id}/")
        counts.append(len(ctx.captured_queries))
    assert counts[0] == counts[1]
