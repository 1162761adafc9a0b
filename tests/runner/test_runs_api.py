"""The runs API without processes: who may do what, bad input, tokens, query counts."""

from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from rigs.models import Rig
from runner import services
from runner.models import AgentRun
from runner.usage import Usage, usage_parse
from tests import factories
from tests.api.conftest import error_of


@pytest.fixture
def rig(make_agent):
    agent, client = make_agent("scripted-1", runtime="scripted")
    rig = factories.rig(agent=agent, state=Rig.State.READY, worktree_path="/tmp/none")
    rig.agent_client = client
    return rig


def test_operator_launches_and_a_second_launch_is_a_conflict(rig, operator):
    response = operator.post(f"/api/v1/rigs/{rig.id}/runs/", {"reason": "go"}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["state"] == "queued" and body["command"] == "gastown-agent"
    assert body["agent"] == "scripted-1" and body["reason"] == "go"
    again = operator.post(f"/api/v1/rigs/{rig.id}/runs/", {}, format="json")
    assert again.status_code == 409
    assert error_of(again)["code"] == "run_active"


def test_launch_refused_without_a_runtime_command(operator, make_agent):
    agent, _ = make_agent("by-hand")  # custom runtime, no command: calls in by itself
    rig = factories.rig(agent=agent, state=Rig.State.READY)
    response = operator.post(f"/api/v1/rigs/{rig.id}/runs/", {}, format="json")
    assert response.status_code == 400
    error = error_of(response)
    assert error["field"] == "agent" and "no runtime command" in error["message"]


def test_launch_refused_for_failed_rig_and_rig_without_agent(operator):
    failed = factories.rig(state=Rig.State.FAILED, agent=factories.agent(runtime="scripted"))
    response = operator.post(f"/api/v1/rigs/{failed.id}/runs/", {}, format="json")
    assert response.status_code == 409 and error_of(response)["code"] == "rig_not_runnable"
    lonely = factories.rig(agent=None, state=Rig.State.READY)
    response = operator.post(f"/api/v1/rigs/{lonely.id}/runs/", {}, format="json")
    assert response.status_code == 400 and error_of(response)["field"] == "rig"


def test_viewers_read_but_do_not_launch_or_stop(rig, viewer):
    run = services.agent_run_request(rig=rig)
    assert viewer.get(f"/api/v1/runs/{run.id}/").status_code == 200
    assert viewer.post(f"/api/v1/rigs/{rig.id}/runs/", {}, format="json").status_code == 403
    assert viewer.post(f"/api/v1/runs/{run.id}/stop/").status_code == 403


def test_agents_see_only_their_own_runs(rig, make_agent):
    mine = services.agent_run_request(rig=rig)
    other_agent, other_client = make_agent("other", runtime="scripted")
    other_rig = factories.rig(agent=other_agent, state=Rig.State.READY)
    theirs = services.agent_run_request(rig=other_rig)
    listed = rig.agent_client.get("/api/v1/runs/").json()["results"]
    assert [r["id"] for r in listed] == [mine.id]
    assert rig.agent_client.get(f"/api/v1/runs/{theirs.id}/").status_code == 403
    assert rig.agent_client.post(f"/api/v1/runs/{theirs.id}/stop/").status_code == 403
    assert other_client.get(f"/api/v1/runs/{theirs.id}/").status_code == 200


def test_stopping_a_queued_run_cancels_it_and_an_ended_run_is_a_conflict(rig, operator):
    run = services.agent_run_request(rig=rig)
    response = operator.post(f"/api/v1/runs/{run.id}/stop/")
    assert response.status_code == 200 and response.json()["state"] == "cancelled"
    again = operator.post(f"/api/v1/runs/{run.id}/stop/")
    assert again.status_code == 409 and error_of(again)["code"] == "illegal_transition"
    assert operator.post("/api/v1/runs/999999/stop/").status_code == 404


def test_usage_adds_to_the_run_and_the_convoy_and_refuses_bad_input(rig, operator):
    convoy = factories.convoy(repository=rig.repository, budget_usd=Decimal("1.00"))
    leg = factories.leg(convoy=convoy, rig=rig, state="working")
    run = services.agent_run_request(rig=rig, leg=leg)
    url = f"/api/v1/runs/{run.id}/usage/"
    ok = rig.agent_client.post(url, {"input_tokens": 100, "cost_usd": "0.40"}, format="json")
    assert ok.status_code == 200, ok.content
    ok = rig.agent_client.post(url, {"output_tokens": 7, "cost_usd": "0.35"}, format="json")
    assert ok.json()["cost_usd"] == "0.7500" and ok.json()["input_tokens"] == 100
    convoy.refresh_from_db()
    assert convoy.spent_usd == Decimal("0.75")
    for bad in ({"cost_usd": "-1"}, {"input_tokens": -5}, {"cost_usd": "abc"}, {"cost_usd": "1e9"}):
        response = rig.agent_client.post(url, bad, format="json")
        assert response.status_code == 400, bad
        assert error_of(response)["field"] in ("cost_usd", "input_tokens")
    # crossing the budget cancels queued work and says so
    rig.agent_client.post(url, {"cost_usd": "0.30"}, format="json")
    convoy.refresh_from_db()
    assert convoy.spent_usd == Decimal("1.05")
    run.refresh_from_db()
    assert run.state == AgentRun.State.CANCELLED and "reached its budget" in run.reason
    body = operator.get(f"/api/v1/convoys/{convoy.id}/").json()
    assert body["budget_reached"] is True and body["spent_usd"] == "1.0500"


def test_log_reads_tail_and_follows_offsets(rig, operator, tmp_path):
    run = services.agent_run_request(rig=rig)
    log = tmp_path / "run.log"
    log.write_bytes(b"line one\nline two\n")
    AgentRun.objects.filter(pk=run.pk).update(log_path=str(log))
    body = operator.get(f"/api/v1/runs/{run.id}/log/").json()
    assert body["text"] == "line one\nline two\n" and body["next_offset"] == 18
    with open(log, "ab") as handle:
        handle.write(b"line three\n")
    more = operator.get(f"/api/v1/runs/{run.id}/log/?offset=18").json()
    assert more["text"] == "line three\n" and more["complete"] is False
    for bad in ("-1", "abc", "1.5", "9" * 30):
        response = operator.get(f"/api/v1/runs/{run.id}/log/?offset={bad}")
        assert response.status_code == 400 and error_of(response)["field"] == "offset"


def test_run_token_acts_as_the_agent_only_while_the_run_lives(rig):
    run = services.agent_run_request(rig=rig)
    token = run.issue_token()
    AgentRun.objects.filter(pk=run.pk).update(token_hash=run.token_hash)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/v1/me/").status_code == 401  # queued: not started yet
    AgentRun.objects.filter(pk=run.pk).update(state=AgentRun.State.RUNNING)
    me = client.get("/api/v1/me/")
    assert me.status_code == 200 and me.json()["agent"]["name"] == "scripted-1"
    AgentRun.objects.filter(pk=run.pk).update(state=AgentRun.State.SUCCEEDED)
    assert client.get("/api/v1/me/").status_code == 401
    client.credentials(HTTP_AUTHORIZATION="Token gtr_forged")
    assert client.get("/api/v1/me/").status_code == 401


def test_run_list_query_count_does_not_grow(rig, operator, django_assert_max_num_queries):
    for n in range(15):
        other = factories.rig(agent=factories.agent(runtime="scripted"), state=Rig.State.READY)
        services.agent_run_request(rig=other, leg=factories.leg(rig=other))
    with django_assert_max_num_queries(8):
        body = operator.get("/api/v1/runs/?limit=50").json()
    assert body["count"] == 15


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("GT_USAGE input_tokens=10 output_tokens=5 cost_usd=0.25", Usage(10, 5, Decimal("0.25"))),
        (
            '{"type":"result","total_cost_usd":0.0123,"usage":{"input_tokens":9,'
            '"output_tokens":3}}',
            Usage(9, 3, Decimal("0.0123")),
        ),
        ("tokens used: 12,345", Usage(0, 12345, Decimal(0))),
        ("GT_USAGE cost_usd=-3", Usage(0, 0, Decimal(0))),
        ('{"cost_usd": "NaN"}', Usage(0, 0, Decimal(0))),
        ("just some output", None),
        ("{not json cost_usd", None),
    ],
)
def test_usage_lines_from_runtimes(line, expected):
    assert usage_parse(line) == expected


def test_log_chunks_never_split_a_character(rig, operator, tmp_path):
    run = services.agent_run_request(rig=rig)
    log = tmp_path / "run.log"
    log.write_bytes("héllo ✓ done\n".encode())
    AgentRun.objects.filter(pk=run.pk).update(log_path=str(log))
    text, offset = "", 0
    while True:
        body = operator.get(f"/api/v1/runs/{run.id}/log/?offset={offset}&limit=2").json()
        if body["next_offset"] == offset:
            break
        text, offset = text + body["text"], body["next_offset"]
    assert text == "héllo ✓ done\n"


def test_convoy_created_with_a_budget(operator, make_agent):
    make_agent("budgeted", runtime="scripted")
    repository = factories.repository()
    legs = [{"key": "a", "title": "A", "agent": "budgeted"}]
    body = {"title": "Costly", "repository": repository.id, "legs": legs, "budget_usd": "12.50"}
    response = operator.post("/api/v1/convoys/", body, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["budget_usd"] == "12.50" and response.json()["budget_reached"] is False
    for bad in ("-1", "abc", "1e12"):
        response = operator.post("/api/v1/convoys/", {**body, "budget_usd": bad}, format="json")
        assert response.status_code == 400 and error_of(response)["field"] == "budget_usd", bad


def test_run_token_opens_the_events_websocket_while_the_run_lives(rig):
    from rigs.auth import principal_for_token

    run = services.agent_run_request(rig=rig)
    token = run.issue_token()
    AgentRun.objects.filter(pk=run.pk).update(token_hash=run.token_hash, state="running")
    user, auth = principal_for_token(token)
    assert user.is_authenticated and auth == rig.agent
    AgentRun.objects.filter(pk=run.pk).update(state="stopped")
    assert principal_for_token(token) is None


def test_admin_launches_and_stops_and_reports_refusals(rig, admin_client):
    url = "/admin/rigs/rig/"
    response = admin_client.post(
        url, {"action": "launch_agent", "_selected_action": [rig.id]}, follow=True
    )
    shown = [str(m) for m in response.context["messages"]]
    assert any("Launched the agent of 1 item(s)" in m for m in shown), shown
    run = AgentRun.objects.get(rig=rig)
    response = admin_client.post(
        url, {"action": "launch_agent", "_selected_action": [rig.id]}, follow=True
    )
    shown = [str(m) for m in response.context["messages"]]
    assert any(f"already has run {run.id}" in m for m in shown), shown
    lonely = factories.rig(agent=factories.agent(), state=Rig.State.READY)  # no command
    response = admin_client.post(
        url, {"action": "launch_agent", "_selected_action": [lonely.id]}, follow=True
    )
    shown = [str(m) for m in response.context["messages"]]
    assert any("has no runtime command" in m and "[" not in m for m in shown), shown
    response = admin_client.post(
        "/admin/runner/agentrun/", {"action": "stop", "_selected_action": [run.id]}, follow=True
    )
    run.refresh_from_db()
    assert run.state == AgentRun.State.CANCELLED and "stopped by admin" in run.reason
    response = admin_client.get(f"/admin/runner/agentrun/{run.id}/change/")
    assert response.status_code == 200
