"""Coordination on the board. Questions to a person: the header's count and link, the
Escalations page, the rig page (a question with its answer form, an ended turn, messages with
their sender and thread), the convoy page (the questions of its rigs, a leg whose turn ended);
answering (an operator; a viewer may not; bad input is a 400). A bead's comments and a released
claim on the rig page. Django's test client; test_escalations_browser.py answers one in
Chromium."""

import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from convoys.models import Convoy, Leg
from convoys.services import bead_claim, coordination
from notifications.models import Notification
from rigs.models import Rig
from tests import factories

pytestmark = pytest.mark.django_db
JSON = {"HTTP_ACCEPT": "application/json"}


@pytest.fixture
def scene():
    repo = factories.repository(name="app")
    ada = factories.agent(name="ada")
    api = factories.rig(repository=repo, slug="api", agent=ada, state=Rig.State.WORKING)
    web = factories.rig(repository=repo, slug="web", state=Rig.State.WORKING)
    convoy = factories.convoy(repository=repo, title="Auth", slug="auth",
                              state=Convoy.State.LAUNCHED)  # fmt: skip
    leg = factories.leg(convoy=convoy, key="api", rig=api, state=Leg.State.WORKING)
    factories.leg(convoy=convoy, key="web", rig=web, state=Leg.State.WORKING)
    question = coordination.escalation_raise(rig=api, text="JWT or opaque tokens?", agent=ada)
    return {"api": api, "web": web, "convoy": convoy, "leg": leg, "question": question}


@pytest.fixture
def viewer_web(viewer):
    """A viewer's own client (`viewer_client` and `operator_client` share one)."""
    client = Client()
    client.force_login(viewer)
    return client


def count_in_header(html: str) -> int:
    found = re.search(r"data-escalations-count>(\d+)<", html)
    return int(found.group(1)) if found else 0


def test_the_header_counts_open_questions_on_every_page(viewer_client, scene):
    for url in ("/", f"/convoys/{scene['convoy'].id}/", f"/rigs/{scene['api'].id}/"):
        html = viewer_client.get(url).content.decode()
        assert count_in_header(html) == 1, url
        assert 'href="/escalations/"' in html
    badge = viewer_client.get("/escalations/badge/").content.decode()
    assert count_in_header(badge) == 1
    coordination.rig_turn_end(rig=scene["web"], status="deferred", reason="later", by="x")
    assert count_in_header(viewer_client.get("/escalations/badge/").content.decode()) == 2


def test_the_escalations_page_lists_questions_with_answer_forms(
    operator_client, viewer_web, scene, django_assert_max_num_queries
):
    question = scene["question"]
    with CaptureQueriesContext(connection) as few:
        html = operator_client.get("/escalations/").content.decode()
    assert f'id="question-{question.id}"' in html and "JWT or opaque tokens?" in html
    assert f'action="/notifications/{question.id}/answer/"' in html
    assert "leg api" in html
    for n in range(5):  # more questions: no more queries
        coordination.escalation_raise(rig=scene["web"], text=f"q{n}", agent=scene["api"].agent)
    with django_assert_max_num_queries(len(few)):
        operator_client.get("/escalations/")
    assert len(few) <= 9  # session, user, roles, last event, 3 for the page, the header count
    as_viewer = viewer_web.get("/escalations/").content.decode()
    assert f'id="question-{question.id}"' in as_viewer and "answer-form" not in as_viewer
    assert viewer_web.get("/escalations/live/").status_code == 200


def test_an_operator_answers_on_the_board_and_the_agent_gets_it(operator_client, viewer_web, scene):
    question, api = scene["question"], scene["api"]
    url = f"/notifications/{question.id}/answer/"
    refused = viewer_web.post(url, {"answer": "JWT"}, **JSON)
    assert refused.status_code == 403
    # the role first, whatever the id: the same JSON 403 for one that does not exist
    missing = viewer_web.post("/notifications/999999/answer/", {"answer": "JWT"}, **JSON)
    assert missing.status_code == 403 and missing.json() == refused.json()
    empty = operator_client.post(url, {"answer": "  "}, **JSON)
    assert empty.status_code == 400 and empty.json()["error"]["field"] == "answer"
    long = operator_client.post(url, {"answer": "x" * 4001}, **JSON)
    assert long.status_code == 400
    answered = operator_client.post(url, {"answer": "Opaque: we revoke them."}, **JSON)
    assert answered.status_code == 200, answered.json()
    assert f"Answered #{question.id}" in answered.json()["message"]
    question.refresh_from_db()
    assert question.state == "resolved" and "olive" in question.resolution
    reply = Notification.objects.get(rig=api, kind="message")
    assert reply.reply_to_id == question.id and reply.sender == "olive"
    again = operator_client.post(url, {"answer": "again"}, **JSON)
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_resolved"
    # without JavaScript: a redirect back with the message
    other = coordination.escalation_raise(rig=api, text="Another?", agent=api.agent)
    response = operator_client.post(f"/notifications/{other.id}/answer/", {"answer": "Yes."})
    assert response.status_code == 302 and response["Location"] == f"/rigs/{api.id}/"
    assert operator_client.post("/notifications/999999/answer/", {"answer": "x"}).status_code == 404


def test_the_rig_page_shows_its_questions_turn_and_messages(operator_client, scene):
    api, web = scene["api"], scene["web"]
    coordination.rig_turn_end(rig=api, status="escalated", reason="Need a decision", by="ada")
    message = coordination.message_send(
        recipients=[api], text="I renamed make_token.", sender="bob", from_rig=web
    )[0]
    reply = coordination.message_send(
        recipients=[web], text="Thanks", sender="ada", from_rig=api, reply_to=message
    )[0]
    html = operator_client.get(f"/rigs/{api.id}/").content.decode()
    assert 'id="turn-ended"' in html and "Turn ended (escalated):" in html
    assert "Need a decision" in html and "does not relaunch" in html
    assert 'id="questions"' in html and html.count('class="answer-form"') == 2
    assert "from <strong>bob</strong>" in html and f'href="/rigs/{web.id}/">web</a>' in html
    other = operator_client.get(f"/rigs/{web.id}/").content.decode()
    assert f'data-reply-to="{message.id}"' in other and f"re #{message.id}" in other
    assert reply.reply_to_id == message.id


def test_the_convoy_page_shows_its_rigs_questions_and_a_legs_ended_turn(operator_client, scene):
    coordination.rig_turn_end(rig=scene["api"], status="deferred", reason="waiting", by="ada")
    html = operator_client.get(f"/convoys/{scene['convoy'].id}/").content.decode()
    assert 'id="convoy-questions"' in html and "2 questions" in html
    assert f'id="question-{scene["question"].id}"' in html
    row = html[html.index(f'id="leg-{scene["leg"].id}"') :][:3000]
    assert "data-turn-ended" in row and "turn deferred" in row
    live = operator_client.get(f"/convoys/{scene['convoy'].id}/live/").content.decode()
    assert "data-turn-ended" in live


def test_the_rig_page_shows_a_beads_comments_and_a_released_claim(operator_client, scene):
    api = scene["api"]
    bead = factories.bead(rig=api, title="Token endpoint")
    coordination.bead_comment_add(bead=bead, text="Return 201, not 200.", agent=api.agent)
    html = operator_client.get(f"/rigs/{api.id}/").content.decode()
    assert f'id="comments-{bead.id}"' in html and "1 comment<" in html
    assert "<strong>ada</strong>" in html and "Return 201, not 200." in html
    bead_claim(bead=bead, agent=api.agent)
    coordination.bead_release(bead=bead, by="ada", holder=api.agent)
    lanes = operator_client.get(f"/rigs/{api.id}/live/").content.decode()
    ready = lanes[lanes.index("lane-ready") : lanes.index("lane-in_progress")]
    assert bead.short_id in ready
