"""Coordination verbs in the API: messages between rigs (and replies), escalations and their
answers, ended turns, comments on beads, releasing a claim, blocked beads, editing a bead's
assignee, and looking a rig up by its worktree. Who may (agents inside their repositories,
operators answer, viewers read), and bad input as 4xx naming the field."""

import pytest

from convoys.models import Bead, BeadComment, Convoy, Leg
from convoys.services import bead_claim, bead_dependency_add
from events.models import Event
from notifications.models import Notification, Webhook, WebhookDelivery
from rigs.models import Rig
from tests import factories
from tests.api.conftest import error_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def town(make_agent):
    """Two agents at work on one repository (a convoy with a leg each), a third on another."""
    repo = factories.repository(name="app")
    elsewhere = factories.repository(name="other")
    ada, ada_client = make_agent("ada")
    bob, bob_client = make_agent("bob")
    cyd, cyd_client = make_agent("cyd")
    api = factories.rig(repository=repo, slug="api", agent=ada, state=Rig.State.WORKING,
                        worktree_path="/srv/worktrees/app/api")  # fmt: skip
    web = factories.rig(repository=repo, slug="web", agent=bob, state=Rig.State.WORKING)
    far = factories.rig(repository=elsewhere, slug="far", agent=cyd, state=Rig.State.WORKING)
    convoy = factories.convoy(repository=repo, slug="auth", title="Auth",
                              state=Convoy.State.LAUNCHED)  # fmt: skip
    factories.leg(convoy=convoy, key="api", rig=api, state=Leg.State.WORKING)
    factories.leg(convoy=convoy, key="web", rig=web, state=Leg.State.WORKING)
    return {
        "repo": repo, "convoy": convoy, "api": api, "web": web, "far": far,
        "ada": ada_client, "bob": bob_client, "cyd": cyd_client,
    }  # fmt: skip


def send(client, **body):
    return client.post("/api/v1/messages/", body, format="json")


# --- messages -----------------------------------------------------------------------------------


def test_a_message_reaches_the_other_rigs_inbox_and_a_reply_threads_back(town):
    api, web = town["api"], town["web"]
    response = send(town["ada"], to="web", text="I renamed make_token to issue_token.")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["to"] == "rig web" and body["count"] == 1
    message = body["messages"][0]
    assert message["rig"] == web.id and message["kind"] == "message"
    assert message["sender"] == "ada" and message["source_rig"] == api.id
    assert message["severity"] == "info" and message["state"] == "open"
    assert message["summary"] == "ada (rig api): I renamed make_token to issue_token."
    assert message["changes"]["text"] == "I renamed make_token to issue_token."
    event = Event.objects.get(kind="notification.new", rig_id=web.id)
    assert event.payload["kind"] == "message" and event.convoy_id == town["convoy"].id

    inbox = town["bob"].get(f"/api/v1/notifications/?rig={web.id}&unacked=true").json()
    assert [n["id"] for n in inbox["results"]] == [message["id"]]
    assert town["ada"].get(f"/api/v1/notifications/?rig={web.id}").status_code == 403

    reply = send(town["bob"], reply_to=message["id"], text="Thanks, I will follow.")
    assert reply.status_code == 201, reply.json()
    back = reply.json()["messages"][0]
    assert back["rig"] == api.id and back["reply_to"] == message["id"]
    assert back["sender"] == "bob" and back["source_rig"] == web.id
    assert Notification.objects.get(pk=back["id"]).reply_to_id == message["id"]


def test_by_agent_by_rig_id_and_to_a_whole_convoy(town):
    api, web = town["api"], town["web"]
    by_agent = send(town["ada"], to_agent="bob", text="ping")
    assert by_agent.status_code == 201 and by_agent.json()["to"] == "agent bob (rig web)"
    by_id = send(town["ada"], to_rig=web.id, text="by id")
    assert by_id.json()["messages"][0]["rig"] == web.id
    # a third rig on the convoy; a rig whose leg landed is told nothing
    carol = factories.agent(name="carol")
    ui = factories.rig(repository=town["repo"], slug="ui", agent=carol, state=Rig.State.WORKING)
    factories.leg(convoy=town["convoy"], key="ui", rig=ui, state=Leg.State.READY)
    done = factories.rig(repository=town["repo"], slug="done", state=Rig.State.MERGED)
    factories.leg(convoy=town["convoy"], key="done", rig=done, state=Leg.State.LANDED)
    everyone = send(town["ada"], to_convoy="auth", text="Standup: what blocks you?")
    assert everyone.status_code == 201, everyone.json()
    assert everyone.json()["to"] == "convoy auth"
    assert sorted(m["rig"] for m in everyone.json()["messages"]) == sorted([web.id, ui.id])
    assert not Notification.objects.filter(rig=api, kind="message").exists()  # not to itself
    assert not Notification.objects.filter(rig=done).exists()


def test_an_operator_messages_any_rig_without_a_rig_of_its_own(town, operator):
    response = send(operator, to_rig=town["far"].id, text="Please rebase today.")
    assert response.status_code == 201, response.json()
    message = response.json()["messages"][0]
    assert message["sender"] == "op" and message["source_rig"] is None


def test_who_may_message_whom(town, viewer, nobody):
    far = town["far"]
    outside = send(town["ada"], to_rig=far.id, text="hello")
    assert outside.status_code == 403
    assert "own repositories" in error_of(outside)["message"]
    # a name found only on another repository: told so (not "no such rig")
    elsewhere = send(town["ada"], to="far", text="hello")
    assert elsewhere.status_code == 403 and error_of(elsewhere)["code"] == "not_your_repository"
    unknown = send(town["ada"], to="nobody-at-all", text="hello")
    assert unknown.status_code == 400 and error_of(unknown)["field"] == "to"
    assert send(viewer, to_rig=town["web"].id, text="hello").status_code == 403
    assert send(nobody, to_rig=town["web"].id, text="hello").status_code == 403
    theirs = send(town["cyd"], to_rig=far.id, text="note to self?")
    assert theirs.status_code == 400  # one's own rig
    note = factories.notification(rig=town["web"], kind="message", summary="private")
    stolen = send(town["ada"], reply_to=note.id, text="I read your inbox")
    assert stolen.status_code == 403
    wrong_from = send(town["ada"], to="web", text="x", from_rig=town["web"].id)
    assert wrong_from.status_code == 403


@pytest.mark.parametrize(
    "body, field",
    [
        ({"text": "no one"}, "to"),
        ({"to": "web", "to_rig": 1, "text": "two"}, "to"),
        ({"to": "web"}, "text"),
        ({"to": "web", "text": "   "}, "text"),
        ({"to": "web", "text": "x" * 4001}, "text"),
        ({"to_rig": 10**30, "text": "huge"}, "to_rig"),
        ({"to_rig": "9" * 30, "text": "huge"}, "to_rig"),
        ({"to_convoy": 0, "text": "zero"}, "to_convoy"),
        ({"to": "x" * 64, "text": "long"}, "to"),
        ({"to_rig": "Not A Slug!", "text": "bad"}, "to_rig"),
        ({"to_rig": 999999, "text": "gone"}, "to_rig"),
        ({"to_convoy": "nope", "text": "gone"}, "to_convoy"),
        ({"to_agent": "nobody", "text": "gone"}, "to_agent"),
        ({"to": "web", "text": "x", "reply_to": 999999}, "reply_to"),
        ({"to": "web", "text": "x", "reply_to": "abc"}, "reply_to"),
    ],
)
def test_bad_messages_are_400_naming_the_field(town, body, field):
    response = send(town["ada"], **body)
    assert response.status_code == 400, response.json()
    assert error_of(response)["field"] == field


def test_a_message_nobody_would_read_is_refused(town):
    town["web"].state = Rig.State.ARCHIVED
    town["web"].save()
    archived = send(town["ada"], to_rig=town["web"].id, text="hello?")
    assert archived.status_code == 409 and error_of(archived)["code"] == "work_finished"
    Leg.objects.filter(rig=town["web"]).update(state=Leg.State.LANDED)
    lonely = send(town["ada"], to_convoy="auth", text="anyone?")
    assert lonely.status_code == 409 and error_of(lonely)["code"] == "no_recipients"


def test_bodies_that_are_not_json_or_too_big(town, settings):
    client = town["ada"]
    raw = client.post("/api/v1/messages/", "to=web&text=hi", content_type="text/plain")
    assert raw.status_code == 415
    settings.GASTOWN_MAX_BODY_BYTES = 10_000
    big = client.post("/api/v1/messages/", {"to": "web", "text": "x" * 20_000}, format="json")
    assert big.status_code == 413


# --- escalations and answers --------------------------------------------------------------------


def test_an_escalation_is_answered_and_the_answer_reaches_the_agent(
    town, operator, viewer, settings
):
    settings.GASTOWN_WEBHOOK_ALLOW_PRIVATE = True
    Webhook.objects.create(repository=town["repo"], url="https://hooks.example.com/gastown")
    api = town["api"]
    bead = factories.bead(rig=api, title="Choose a token format")
    asked = town["ada"].post(
        "/api/v1/escalations/",
        {"text": "JWT or opaque tokens?", "bead": bead.short_id},
        format="json",
    )
    assert asked.status_code == 201, asked.json()
    notice = asked.json()
    assert notice["kind"] == "escalation" and notice["severity"] == "critical"
    assert notice["rig"] == api.id and notice["sender"] == "ada"
    assert notice["changes"]["bead"] == bead.short_id
    assert bead.short_id in notice["summary"] and "JWT or opaque tokens?" in notice["summary"]
    assert WebhookDelivery.objects.filter(notification_id=notice["id"]).exists()

    url = f"/api/v1/notifications/{notice['id']}/answer/"
    assert viewer.post(url, {"answer": "JWT"}, format="json").status_code == 403
    assert town["ada"].post(url, {"answer": "JWT"}, format="json").status_code == 403
    assert operator.post(url, {"answer": ""}, format="json").status_code == 400
    answered = operator.post(url, {"answer": "Opaque: we revoke them."}, format="json")
    assert answered.status_code == 200, answered.json()
    result = answered.json()
    assert result["notification"]["state"] == "resolved"
    assert result["notification"]["resolution"] == "answered by op: Opaque: we revoke them."
    reply = result["reply"]
    assert reply["rig"] == api.id and reply["kind"] == "message"
    assert reply["reply_to"] == notice["id"] and reply["sender"] == "op"
    assert reply["severity"] == "warning"
    inbox = town["ada"].get(f"/api/v1/notifications/?rig={api.id}&unacked=true").json()
    assert reply["id"] in [n["id"] for n in inbox["results"]]
    assert notice["id"] not in [n["id"] for n in inbox["results"]]  # resolved

    again = operator.post(url, {"answer": "JWT after all"}, format="json")
    assert again.status_code == 409 and error_of(again)["code"] == "already_resolved"
    not_a_question = operator.post(
        f"/api/v1/notifications/{reply['id']}/answer/", {"answer": "?"}, format="json"
    )
    assert not_a_question.status_code == 400
    assert error_of(not_a_question)["code"] == "not_a_question"
    assert operator.post("/api/v1/notifications/999999/answer/", {"answer": "x"}).status_code == 404


def test_only_agents_escalate_and_from_their_own_rigs(town, operator):
    assert operator.post("/api/v1/escalations/", {"text": "?"}, format="json").status_code == 403
    theirs = town["ada"].post(
        "/api/v1/escalations/", {"text": "?", "rig": town["web"].id}, format="json"
    )
    assert theirs.status_code == 403
    blank = town["ada"].post("/api/v1/escalations/", {"text": ""}, format="json")
    assert blank.status_code == 400 and error_of(blank)["field"] == "text"
    no_bead = town["ada"].post(
        "/api/v1/escalations/", {"text": "?", "bead": "gt-zzzz"}, format="json"
    )
    assert no_bead.status_code == 400 and error_of(no_bead)["field"] == "bead"


# --- an ended turn ------------------------------------------------------------------------------


def test_an_agent_ends_its_turn_deferred_and_a_person_answers(town, operator):
    api = town["api"]
    leg = Leg.objects.get(rig=api)
    url = f"/api/v1/rigs/{api.id}/end-turn/"
    assert town["bob"].post(url, {"status": "deferred", "reason": "x"}).status_code == 403
    bad = town["ada"].post(url, {"status": "later", "reason": "x"}, format="json")
    assert bad.status_code == 400 and error_of(bad)["field"] == "status"
    ended = town["ada"].post(
        url, {"status": "deferred", "reason": "Waiting for the web leg's API."}, format="json"
    )
    assert ended.status_code == 201, ended.json()
    notice = ended.json()
    assert notice["kind"] == "deferred" and notice["severity"] == "warning"
    assert notice["topic"] == f"turn:{leg.id}"
    assert Event.objects.filter(kind="rig.turn_ended", rig_id=api.id).exists()
    # one open notice per turn: ending it again updates it
    escalated = town["ada"].post(url, {"status": "escalated", "reason": "Need a decision."})
    assert escalated.json()["id"] == notice["id"]
    assert escalated.json()["kind"] == "escalation" and escalated.json()["severity"] == "critical"
    answered = operator.post(
        f"/api/v1/notifications/{notice['id']}/answer/", {"answer": "Go on without it."}
    )
    assert answered.status_code == 200 and answered.json()["notification"]["state"] == "resolved"


def test_a_finished_rig_has_no_turn_to_end(town):
    Leg.objects.filter(rig=town["api"]).update(state=Leg.State.LANDED)
    refused = town["ada"].post(
        f"/api/v1/rigs/{town['api'].id}/end-turn/", {"status": "deferred", "reason": "done?"}
    )
    assert refused.status_code == 409 and error_of(refused)["code"] == "work_finished"


# --- comments -------------------------------------------------------------------------------------


def test_comments_on_a_bead_tell_its_rig(town, operator, viewer):
    bead = factories.bead(rig=town["web"], title="Login form")
    url = f"/api/v1/beads/{bead.short_id}/comments/"
    added = town["ada"].post(url, {"text": "The endpoint returns 201 now."}, format="json")
    assert added.status_code == 201, added.json()
    assert added.json()["author"] == "ada" and added.json()["author_kind"] == "agent"
    told = Notification.objects.get(rig=town["web"], kind="message")
    assert bead.short_id in told.summary and told.sender == "ada"
    own = town["bob"].post(url, {"text": "Noted."}, format="json")
    assert own.status_code == 201
    assert Notification.objects.filter(rig=town["web"], kind="message").count() == 1
    by_person = operator.post(url, {"text": "Ship it."}, format="json")
    assert by_person.json()["author_kind"] == "person"
    listed = viewer.get(url).json()
    assert [c["text"] for c in listed["results"]] == [
        "The endpoint returns 201 now.",
        "Noted.",
        "Ship it.",
    ]
    assert Event.objects.filter(kind="bead.commented").count() == 3
    assert viewer.post(url, {"text": "x"}, format="json").status_code == 403
    assert town["cyd"].post(url, {"text": "x"}, format="json").status_code == 403  # elsewhere
    assert town["ada"].post(url, {"text": ""}, format="json").status_code == 400
    assert town["ada"].post(url, {"text": "x" * 4001}, format="json").status_code == 400
    assert viewer.get("/api/v1/beads/gt-zzzz/comments/").status_code == 404
    assert BeadComment.objects.count() == 3


# --- releasing a claim --------------------------------------------------------------------------


def test_only_the_holder_or_an_operator_releases_a_claim(town, operator, viewer):
    api, ada = town["api"], town["api"].agent
    bead = factories.bead(rig=api, title="Token endpoint")
    bead_claim(bead=bead, agent=ada)
    url = f"/api/v1/beads/{bead.short_id}/release/"
    assert town["bob"].post(url).status_code == 403
    assert viewer.post(url).status_code == 403
    released = town["ada"].post(url)
    assert released.status_code == 200, released.json()
    assert released.json()["status"] == "open" and released.json()["assignee"] is None
    bead.refresh_from_db()
    assert bead.claimed_at is None and bead.lease_expires_at is None
    event = Event.objects.get(kind="bead.released")
    assert event.payload["agent"] == "ada" and event.payload["to"] == "open"
    again = town["ada"].post(url)
    assert again.status_code == 409 and error_of(again)["code"] == "not_claimed"
    bead_claim(bead=bead, agent=ada)
    assert operator.post(url).json()["status"] == "open"  # an operator frees a stuck bead
    assert town["ada"].post("/api/v1/beads/gt-zzzz/release/").status_code == 404


# --- blocked beads ------------------------------------------------------------------------------


def test_blocked_beads_say_what_blocks_them(town, viewer):
    api = town["api"]
    first = factories.bead(rig=api, title="Schema", priority=0)
    second = factories.bead(rig=api, title="Endpoint", priority=1)
    held = factories.bead(rig=api, title="Later", status=Bead.Status.DEFERRED)
    factories.bead(rig=api, title="Ready one")
    bead_dependency_add(bead=second, depends_on=first)
    page = viewer.get(f"/api/v1/beads/blocked/?rig={api.id}").json()
    assert [b["short_id"] for b in page["results"]] == [second.short_id, held.short_id]
    endpoint = page["results"][0]
    assert endpoint["blocked_by"][0]["short_id"] == first.short_id
    assert endpoint["reasons"] == [f"blocked by {first.short_id} (open): Schema"]
    assert page["results"][1]["reasons"] == ["status is deferred, not open"]
    assert viewer.get("/api/v1/beads/blocked/?rig=abc").status_code == 400


# --- editing a bead: the assignee ----------------------------------------------------------------


def test_patch_assignee(town, operator):
    bead = factories.bead(rig=town["api"], title="Docs")
    url = f"/api/v1/beads/{bead.short_id}/"
    to_bob = town["ada"].patch(url, {"assignee": "bob"}, format="json")
    assert to_bob.status_code == 403
    mine = town["ada"].patch(url, {"assignee": "ada", "priority": 0}, format="json")
    assert mine.status_code == 200 and mine.json()["assignee"] == "ada"
    assert operator.patch(url, {"assignee": "bob"}, format="json").json()["assignee"] == "bob"
    assert operator.patch(url, {"assignee": None}, format="json").json()["assignee"] is None
    assert operator.patch(url, {"assignee": "ghost"}, format="json").status_code == 400
    bead_claim(bead=bead, agent=town["api"].agent)
    busy = operator.patch(url, {"assignee": "bob"}, format="json")
    assert busy.status_code == 400 and error_of(busy)["field"] == "assignee"


# --- a rig by its worktree ----------------------------------------------------------------------


def test_an_agent_finds_its_rig_by_a_path_inside_its_worktree(town, operator):
    api = town["api"]
    deep = "/srv/worktrees/app/api/src/auth/../auth"
    found = town["ada"].get("/api/v1/rigs/", {"worktree": deep}).json()
    assert [r["id"] for r in found["results"]] == [api.id]
    assert town["ada"].get("/api/v1/rigs/", {"worktree": "/srv/worktrees/app"}).json()["count"] == 0
    assert town["bob"].get("/api/v1/rigs/", {"worktree": deep}).json()["count"] == 0  # not his
    assert operator.get("/api/v1/rigs/", {"worktree": deep}).json()["count"] == 1
    relative = town["ada"].get("/api/v1/rigs/", {"worktree": "src/auth"})
    assert relative.status_code == 400 and error_of(relative)["field"] == "worktree"


# --- what the outside testers found -------------------------------------------------------------


def test_an_agent_does_not_message_itself_through_another_of_its_rigs(town):
    # ada's second rig on the same repository: to ada (or the convoy) from api never reaches it
    own = factories.rig(repository=town["repo"], slug="ada-2", agent=Rig.objects.get(
        slug="api").agent, state=Rig.State.WORKING)  # fmt: skip
    itself = send(town["ada"], from_rig=town["api"].id, to_agent="ada", text="me?")
    assert itself.status_code == 400 and "that is you" in error_of(itself)["message"]
    everyone = send(town["ada"], from_rig=town["api"].id, to_convoy="auth", text="all")
    assert [m["rig"] for m in everyone.json()["messages"]] == [town["web"].id]
    assert not Notification.objects.filter(rig=own).exists()


def test_a_reply_to_a_rig_whose_work_is_over_reaches_its_agents_rig_with_work(town):
    api, web = town["api"], town["web"]
    question = send(town["ada"], to="web", text="Which token format?").json()["messages"][0]
    # api's leg lands; ada goes on in a new rig with a new leg
    Leg.objects.filter(rig=api).update(state=Leg.State.LANDED)
    Rig.objects.filter(pk=api.pk).update(state=Rig.State.MERGED)
    api2 = factories.rig(repository=town["repo"], slug="api-2", agent=api.agent,
                         state=Rig.State.WORKING)  # fmt: skip
    factories.leg(convoy=town["convoy"], key="api-2", rig=api2, state=Leg.State.WORKING)
    reply = send(town["bob"], reply_to=question["id"], text="Opaque tokens.")
    assert reply.status_code == 201, reply.json()
    assert [m["rig"] for m in reply.json()["messages"]] == [api2.id]
    assert not Notification.objects.filter(rig=web, kind="message", sender="bob").exists()


def test_an_agents_ack_leaves_its_questions_to_a_person_open(town):
    question = (
        town["ada"]
        .post("/api/v1/escalations/", {"text": "Can I drop Python 3.8?"}, format="json")
        .json()
    )
    note = factories.notification(rig=town["api"], kind="info", summary="fyi")
    refused = town["ada"].post(f"/api/v1/notifications/{question['id']}/ack/")
    assert refused.status_code == 409 and error_of(refused)["code"] == "asks_a_person"
    acked = town["ada"].post("/api/v1/notifications/ack/", {}, format="json")
    assert acked.json()["acked"] == 1
    assert Notification.objects.get(pk=question["id"]).state == "open"
    assert Notification.objects.get(pk=note.pk).state == "acknowledged"


def test_an_escalation_about_another_repositorys_bead_is_refused(town):
    theirs = factories.bead(rig=town["far"], title="far's secret task")
    response = town["ada"].post(
        "/api/v1/escalations/", {"text": "What is this?", "bead": theirs.short_id}, format="json"
    )
    assert response.status_code == 403 and "far's secret" not in response.content.decode()


@pytest.mark.parametrize("body", [{"to": "web", "text": 7}, {"to": "web", "text": ["x"]}])
def test_text_must_be_text(town, body):
    response = send(town["ada"], **body)
    assert response.status_code == 400 and error_of(response)["field"] == "text"


def test_a_status_change_with_a_reason_keeps_it_as_a_comment(town):
    bead = factories.bead(rig=town["api"], title="wire the login")
    response = town["ada"].patch(
        f"/api/v1/beads/{bead.short_id}/",
        {"status": "blocked", "close_reason": "waiting for the token format"},
        format="json",
    )
    assert response.status_code == 200, response.json()
    comment = BeadComment.objects.get(bead=bead)
    assert (comment.author, comment.text) == ("ada", "open → blocked: waiting for the token format")


def test_a_pending_legs_beads_wait_for_the_leg(town):
    ui = factories.rig(repository=town["repo"], slug="ui", agent=factories.agent(),
                       state=Rig.State.READY)  # fmt: skip
    leg = factories.leg(convoy=town["convoy"], key="ui", rig=ui, state=Leg.State.PENDING)
    api_leg = Leg.objects.get(key="api")
    leg.depends_on.add(api_leg)
    bead = factories.bead(rig=ui, leg=leg, convoy=town["convoy"], title="the page")
    ready = town["ada"].get(f"/api/v1/beads/?rig={ui.id}&ready=true").json()["results"]
    assert ready == []
    blocked = town["ada"].get(f"/api/v1/beads/blocked/?rig={ui.id}").json()["results"]
    assert [b["id"] for b in blocked] == [bead.id]
    assert blocked[0]["reasons"] == ["its leg ui waits for api (working) to land"]
    detail = town["ada"].get(f"/api/v1/beads/{bead.short_id}/").json()
    assert detail["not_ready_reasons"] == ["its leg ui waits for api (working) to land"]
