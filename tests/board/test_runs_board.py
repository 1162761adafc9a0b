"""The board shows agents at work: the rig page's runs (launch, stop, the live log), spend and
running agents on convoy cards and pages, and the new-convoy form's budget.

View tests use Django's test client; the browser test drives Debian's Chromium against the real
ASGI server and a real worker with beat, whose agent processes are real.
"""

import re
import time
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from common import process
from convoys.models import Convoy, Leg
from rigs.models import Rig
from runner import services
from runner.models import AgentRun
from tests import factories
from tests.board.browser import chromium_launched
from tests.board.helpers import bulk_convoys
from tests.board.test_browser import log_in, shot
from tests.rigs.helpers import wait_for
from tests.runner.conftest import ready_rig, runner_env, runner_worker, wait_run  # noqa: F401

JSON = {"HTTP_ACCEPT": "application/json"}
S = AgentRun.State


@pytest.fixture
def repo():
    return factories.repository(name="app")


@pytest.fixture
def rig(repo):
    """A ready rig whose agent has a runtime command."""
    agent = factories.agent(name="alice", runtime_command="echo hi")
    return factories.rig(repository=repo, slug="api", state=Rig.State.READY, agent=agent)


def make_run(rig: Rig, state: str = S.SUCCEEDED, **kw) -> AgentRun:
    now = timezone.now()
    ended = state in (S.SUCCEEDED, S.FAILED, S.STOPPED, S.CANCELLED)
    kw.setdefault("started_at", None if state in (S.QUEUED, S.CANCELLED) else now)
    kw.setdefault("finished_at", now if ended else None)
    return AgentRun.objects.create(
        rig=rig, agent=rig.agent, command="echo hi", state=state, requested_by="olive", **kw
    )


def launch_budgeted(rig: Rig, budget: str, spent: str) -> Convoy:
    convoy = factories.convoy(
        repository=rig.repository,
        title="Payments",
        state=Convoy.State.LAUNCHED,
        budget_usd=Decimal(budget),
    )
    Convoy.objects.filter(pk=convoy.pk).update(spent_usd=Decimal(spent))
    factories.leg(convoy=convoy, key="api", rig=rig, state=Leg.State.WORKING)
    convoy.refresh_from_db()
    return convoy


# --- launching from the rig page --------------------------------------------------------------


@pytest.mark.django_db
def test_operator_launches_the_agent_and_sees_the_run_with_a_stop_button(operator_client, rig):
    page = operator_client.get(f"/rigs/{rig.id}/").content.decode()
    assert 'id="launch-agent"' in page and "Agent runs" in page
    assert "No runs yet." in page
    assert "runs <code>echo hi</code>" in page
    response = operator_client.post(f"/rigs/{rig.id}/launch/", **JSON)
    assert response.status_code == 200, response.content
    run = AgentRun.objects.get(rig=rig)
    assert run.state == S.QUEUED and run.requested_by == "olive"
    assert f"run #{run.id}" in response.json()["message"]
    page = operator_client.get(f"/rigs/{rig.id}/").content.decode()
    assert 'id="launch-agent"' not in page  # one active run per rig
    assert f'action="/runs/{run.id}/stop/"' in page and f"Cancel run #{run.id}" in page
    row = page[page.index(f'id="run-{run.id}"') :]
    row = row[: row.index("</tr>")]
    assert "queued: launched by olive from the board" in row and "attempt 1" in row
    # its log is followed by the page's script, and kept across live re-renders
    assert f'data-keep="run-log-{run.id}"' in page
    assert f'data-log-src="/api/v1/runs/{run.id}/log/"' in page
    assert "gastown/runlog.js" in page


@pytest.mark.django_db
def test_a_plain_form_launch_redirects_back_with_the_message(operator_client, rig):
    response = operator_client.post(f"/rigs/{rig.id}/launch/", follow=True)
    assert response.redirect_chain[-1][0] == f"/rigs/{rig.id}/"
    assert "Agent alice launched in rig api as run #" in response.content.decode()


@pytest.mark.django_db
def test_launch_is_refused_without_a_runtime_command(operator_client, repo):
    rig = factories.rig(
        repository=repo, slug="api", state=Rig.State.READY, agent=factories.agent(name="bob")
    )
    page = operator_client.get(f"/rigs/{rig.id}/").content.decode()
    assert 'id="launch-agent"' not in page
    assert "Agent bob has no runtime command" in page
    response = operator_client.post(f"/rigs/{rig.id}/launch/", **JSON)
    assert response.status_code == 400
    assert "agent bob has no runtime command" in response.json()["error"]["message"]
    page = operator_client.post(f"/rigs/{rig.id}/launch/", follow=True).content.decode()
    assert "agent bob has no runtime command" in page
    assert not AgentRun.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("case", ["no agent", "deactivated", "no command", "failed", "budget"])
def test_the_board_explains_a_refusal_in_the_services_words(case, rig):
    """The hidden Launch button and the API give one reason: `agent_run_refusal`."""
    from board.pages import launch_refusal
    from convoys.selectors import rig_current_leg

    if case == "no agent":
        Rig.objects.filter(pk=rig.pk).update(agent=None)
    elif case == "deactivated":
        type(rig.agent).objects.filter(pk=rig.agent_id).update(is_active=False)
    elif case == "no command":
        type(rig.agent).objects.filter(pk=rig.agent_id).update(runtime_command="")
    elif case == "failed":
        Rig.objects.filter(pk=rig.pk).update(state=Rig.State.FAILED)
    else:
        launch_budgeted(rig, budget="1.00", spent="1.50")
    rig = Rig.objects.select_related("agent").get(pk=rig.pk)
    shown = launch_refusal(rig, rig_current_leg(rig))
    with pytest.raises((services.RunConflict, services.ValidationError)) as refused:
        services.agent_run_request(rig=rig)
    raised = refused.value
    said = raised.messages if isinstance(raised, services.ValidationError) else [str(raised)]
    assert shown and said == [shown]


@pytest.mark.django_db
def test_launch_is_refused_while_the_rig_has_an_active_run(operator_client, rig):
    run = services.agent_run_request(rig=rig, requested_by="olive")
    response = operator_client.post(f"/rigs/{rig.id}/launch/", **JSON)
    assert response.status_code == 409
    assert f"rig api already has run {run.id} (queued)" in response.json()["error"]["message"]
    assert AgentRun.objects.count() == 1


@pytest.mark.django_db
def test_launch_is_refused_when_the_convoys_budget_is_reached(operator_client, rig):
    launch_budgeted(rig, budget="5.00", spent="5.00")
    page = operator_client.get(f"/rigs/{rig.id}/").content.decode()
    assert 'id="launch-agent"' not in page
    assert "Cannot launch: convoy &#x27;Payments&#x27; reached its budget" in page
    response = operator_client.post(f"/rigs/{rig.id}/launch/", **JSON)
    assert response.status_code == 409
    message = response.json()["error"]["message"]
    assert "convoy 'Payments' reached its budget: $5.00 spent of $5.00" in message
    assert not AgentRun.objects.exists()


# --- stopping ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_stopping_a_queued_run_cancels_it(operator_client, rig):
    run = services.agent_run_request(rig=rig, requested_by="olive")
    response = operator_client.post(f"/runs/{run.id}/stop/", **JSON)
    assert response.status_code == 200, response.content
    assert response.json()["message"] == f"Run #{run.id} was cancelled before it started."
    run.refresh_from_db()
    assert run.state == S.CANCELLED and "stopped by olive" in run.reason
    page = operator_client.get(f"/rigs/{rig.id}/").content.decode()
    assert 'id="launch-agent"' in page and 'id="stop-run"' not in page


@pytest.mark.django_db
def test_stopping_a_live_run_asks_a_worker_to_terminate_it(operator_client, rig):
    run = make_run(rig, S.RUNNING, pid=999999)
    response = operator_client.post(f"/runs/{run.id}/stop/", **JSON)
    assert response.status_code == 200, response.content
    assert f"Stopping run #{run.id}: its processes get SIGTERM" in response.json()["message"]
    run.refresh_from_db()
    assert run.stop_requested_at is not None and run.kill_reason == "stopped by olive"
    page = operator_client.get(f"/rigs/{rig.id}/").content.decode()
    assert "stopping…" in page


@pytest.mark.django_db
def test_stopping_an_ended_run_shows_a_message_not_a_500(operator_client, rig):
    run = make_run(rig, S.SUCCEEDED, exit_code=0)
    response = operator_client.post(f"/runs/{run.id}/stop/", **JSON)
    assert response.status_code == 409
    assert f"run {run.id} already ended (succeeded)" in response.json()["error"]["message"]
    response = operator_client.post(f"/runs/{run.id}/stop/", follow=True)
    assert response.status_code == 200
    assert response.redirect_chain[-1][0] == f"/rigs/{rig.id}/"
    assert f"run {run.id} already ended (succeeded)" in response.content.decode()
    assert operator_client.post("/runs/999999/stop/", **JSON).status_code == 404


@pytest.mark.django_db
def test_a_viewer_sees_no_run_controls_and_may_not_use_them(viewer_client, rig):
    run = services.agent_run_request(rig=rig, requested_by="olive")
    page = viewer_client.get(f"/rigs/{rig.id}/").content.decode()
    assert f'id="run-{run.id}"' in page  # the runs are shown
    assert 'id="stop-run"' not in page and 'id="launch-agent"' not in page
    assert viewer_client.post(f"/runs/{run.id}/stop/").status_code == 403
    assert viewer_client.post(f"/runs/{run.id}/stop/", **JSON).status_code == 403
    AgentRun.objects.filter(pk=run.pk).update(state=S.CANCELLED)
    assert viewer_client.post(f"/rigs/{rig.id}/launch/").status_code == 403
    response = viewer_client.post(f"/rigs/{rig.id}/launch/", **JSON)
    assert response.status_code == 403
    assert response.json()["error"]["message"] == "Only operators may do this."
    run.refresh_from_db()
    assert run.state == S.CANCELLED and AgentRun.objects.count() == 1


# --- the runs table -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_runs_table_shows_the_last_ten_with_their_figures(operator_client, rig):
    old = [make_run(rig, S.SUCCEEDED, exit_code=0) for _ in range(3)]
    failed = make_run(
        rig,
        S.FAILED,
        exit_code=3,
        reason="exited with code 3",
        input_tokens=1200,
        output_tokens=345,
        cost_usd=Decimal("0.4200"),
    )
    for _ in range(7):
        make_run(rig, S.STOPPED, exit_code=-15)
    page = operator_client.get(f"/rigs/{rig.id}/").content.decode()
    shown = [int(n) for n in re.findall(r'<tr id="run-(\d+)"', page)]
    assert len(shown) == 10 and shown == sorted(shown, reverse=True)
    assert old[0].id not in shown
    row = page[page.index(f'id="run-{failed.id}"') :]
    row = row[: row.index("</tr>")]
    assert "s-failed" in row and "1200 / 345" in row and "$0.42" in row
    assert 'title="exited with code 3">3<' in row and "exited with code 3" in row
    assert "started " in row and "finished " in row
    assert "Needs a person" not in page  # not escalated


@pytest.mark.django_db
def test_escalation_callout_until_the_agent_is_launched_again(operator_client, rig):
    run = make_run(
        rig,
        S.FAILED,
        attempt=3,
        exit_code=3,
        reason="exited with code 3",
        escalated_at=timezone.now(),
    )
    page = operator_client.get(f"/rigs/{rig.id}/").content.decode()
    callout = page[page.index('id="run-escalated"') :][:600]
    assert "Needs a person" in callout and "failed 3 times" in callout
    assert f"Last run #{run.id}: exited with code 3" in callout
    assert "escalated</span>" in page  # the run's row says so too
    make_run(rig, S.SUCCEEDED, exit_code=0)
    page = operator_client.get(f"/rigs/{rig.id}/").content.decode()
    assert 'id="run-escalated"' not in page


@pytest.mark.django_db
def test_rig_page_queries_do_not_grow_with_runs(
    operator_client, rig, django_assert_max_num_queries
):
    make_run(rig, S.SUCCEEDED)
    with CaptureQueriesContext(connection) as few:
        operator_client.get(f"/rigs/{rig.id}/")
    for _ in range(40):
        make_run(rig, S.FAILED, exit_code=1, escalated_at=timezone.now())
    make_run(rig, S.RUNNING)
    # session, user, roles + ~14 for the page (see board.pages.rig_page: its beads' comments
    # are one) + the header's escalations count
    with django_assert_max_num_queries(len(few)):
        html = operator_client.get(f"/rigs/{rig.id}/").content.decode()
    assert len(re.findall(r'<tr id="run-\d+"', html)) == 10
    with django_assert_max_num_queries(len(few)):
        operator_client.get(f"/rigs/{rig.id}/live/")
    assert len(few) <= 16


# --- spend and running agents on cards and the convoy page --------------------------------------


@pytest.mark.django_db
def test_card_and_convoy_page_show_spend_budget_and_running_agents(operator_client, repo):
    convoy = factories.convoy(
        repository=repo, title="Search", state=Convoy.State.LAUNCHED, budget_usd=Decimal("10")
    )
    rigs = [factories.rig(repository=repo, slug=f"s{n}", state=Rig.State.WORKING) for n in range(3)]
    for n, r in enumerate(rigs):
        factories.leg(convoy=convoy, key=f"l{n}", rig=r, state=Leg.State.WORKING)
    make_run(rigs[0], S.RUNNING, convoy=convoy)
    make_run(rigs[1], S.STARTING, convoy=convoy)
    make_run(rigs[2], S.QUEUED, convoy=convoy)  # not running yet
    make_run(rigs[2], S.SUCCEEDED, convoy=convoy)  # done
    Convoy.objects.filter(pk=convoy.pk).update(spent_usd=Decimal("2.50"))

    card = operator_client.get(f"/board/card/{convoy.id}/").content.decode()
    assert "$2.50 of $10.00" in card and "budget reached" not in card
    assert "2 agents running" in card
    page = operator_client.get(f"/convoys/{convoy.id}/").content.decode()
    assert "$2.50 of $10.00" in page and "2 agents running" in page
    assert 'id="budget-reached"' not in page

    Convoy.objects.filter(pk=convoy.pk).update(spent_usd=Decimal("10.00"))
    AgentRun.objects.filter(state=S.STARTING).update(state=S.FAILED)
    card = operator_client.get(f"/board/card/{convoy.id}/").content.decode()
    assert "$10.00 of $10.00" in card and "data-budget-reached" in card
    assert "1 agent running" in card
    page = operator_client.get(f"/convoys/{convoy.id}/").content.decode()
    assert 'id="budget-reached"' in page and "data-budget-reached" in page

    free = factories.convoy(repository=repo, title="No budget", state=Convoy.State.LAUNCHED)
    Convoy.objects.filter(pk=free.pk).update(spent_usd=Decimal("3.10"))
    card = operator_client.get(f"/board/card/{free.id}/").content.decode()
    assert ">$3.10<" in card and " of $" not in card and "running" not in card
    assert "no budget" in card  # in the screen-reader text


@pytest.mark.django_db
def test_board_counts_running_agents_in_one_query(
    operator_client, repo, django_assert_max_num_queries
):
    agent = factories.agent(name="alice", runtime_command="true")
    convoys = bulk_convoys(repo, {"launched": 60, "blocked": 20}, legs_per_convoy=3, agent=agent)
    runs = []
    for convoy in convoys:
        for leg in convoy.legs.select_related("rig"):
            runs.append(
                AgentRun(
                    rig=leg.rig,
                    agent=agent,
                    convoy=convoy,
                    command="true",
                    state=S.RUNNING if leg.position < 2 else S.SUCCEEDED,
                )
            )
    AgentRun.objects.bulk_create(runs)
    # session, user, roles + 10 for the board (the running agents: one grouped query) + the
    # header's escalations count
    with django_assert_max_num_queries(14):
        html = operator_client.get("/").content.decode()
    assert html.count("2 agents running") == 80
    with django_assert_max_num_queries(13):
        operator_client.get("/board/columns/")


# --- the new-convoy form's budget ---------------------------------------------------------------


def convoy_form(repo, agent_name: str, budget: str) -> dict:
    return {
        "title": "Auth system",
        "repository": str(repo.id),
        "budget_usd": budget,
        "leg_key": ["api"],
        "leg_title": ["API"],
        "leg_assignee": [f"agent:{agent_name}"],
        "leg_depends_on": [""],
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("typed", "budget"),
    [("25", Decimal("25")), ("$1,250.50", Decimal("1250.50")), ("0", Decimal("0")), ("", None)],
)
def test_the_form_takes_an_optional_budget(operator_client, repo, typed, budget):
    factories.agent(name="bob")
    page = operator_client.get("/convoys/new/").content.decode()
    assert '<label for="id_budget_usd">Budget in dollars' in page
    response = operator_client.post("/convoys/new/", convoy_form(repo, "bob", typed))
    assert response.status_code == 302, response.content.decode()[:2000]
    convoy = Convoy.objects.get(title="Auth system")
    assert convoy.budget_usd == budget


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("lots", "enter an amount in dollars, e.g. 25 or 12.50 (not &#x27;lots&#x27;)"),
        ("-5", "a budget cannot be negative"),
        ("1.234", "at most two decimal places"),
        ("NaN", "enter an amount in dollars"),
        ("1e3", "enter an amount in dollars"),
        ("123456789012", "at most $99,999,999.99"),
        ("\u0661\u0662", "enter an amount in dollars"),
    ],
)
def test_the_form_refuses_a_bad_budget_and_keeps_what_was_typed(
    operator_client, repo, typed, message
):
    factories.agent(name="bob")
    response = operator_client.post("/convoys/new/", convoy_form(repo, "bob", typed))
    assert response.status_code == 400
    html = response.content.decode()
    assert not Convoy.objects.exists()
    field = html[html.index('<label for="id_budget_usd">') :][:1200]
    assert f'value="{typed}"' in field and 'aria-invalid="true"' in field
    assert 'id="err-budget"' in field and message in field
    assert 'aria-describedby="help-budget err-budget"' in field
    assert 'value="api"' in html  # the legs stay as typed


# --- in a real browser: launch, follow the log live, stop ---------------------------------------


@pytest.fixture
def chromium(runner_worker, monkeypatch):  # noqa: F811  (the fixture imported above)
    with chromium_launched(monkeypatch) as browser:  # after the server and the worker
        yield browser


STREAMER = "for i in $(seq 1 100); do echo line-$i; sleep 0.1; done; sleep 300"


@pytest.mark.browser
@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_operator_launches_follows_the_log_live_and_stops_the_agent(
    chromium,
    ready_rig,  # noqa: F811
    asgi_server,
    operator,
):
    from playwright.sync_api import expect

    rig = ready_rig(STREAMER, slug="streamer")
    context, page = log_in(chromium, asgi_server, operator.username)
    page.goto(f"{asgi_server}/rigs/{rig.id}/")
    expect(page.locator("#live-indicator")).to_have_text("Live")
    page.evaluate("window.__sameDocument = true")

    page.click("#launch-agent")
    expect(page.locator(".toast-success")).to_contain_text("Agent agent-streamer launched")
    run = wait_for(lambda: AgentRun.objects.filter(rig=rig).first(), 10, message="the run")
    row = page.locator(f"#run-{run.id}")
    expect(row).to_be_visible()
    log = page.locator(f"#run-log-{run.id}")
    expect(log).to_be_attached()
    # The same <pre> is carried across the live section's re-renders (queued → running ...).
    log.evaluate("el => { el.__mark = 'kept'; }")
    expect(row.locator("[data-run-badge]")).to_have_text("running", timeout=30_000)
    expect(log).to_contain_text("line-5", timeout=30_000)
    first_seen = time.monotonic()
    expect(log).to_contain_text("line-30", timeout=30_000)
    assert "line-100" not in log.inner_text()  # streamed, not read once at the end
    print(f"line-5 → line-30 shown in {time.monotonic() - first_seen:.1f}s")
    assert log.evaluate("el => el.__mark") == "kept"
    assert log.evaluate("el => el.scrollHeight - el.scrollTop - el.clientHeight < 40")
    assert page.evaluate("window.__sameDocument") is True
    shot(page, "rig-run-live")

    page.click("#stop-run")  # (the confirmation is accepted)
    expect(page.locator(".toast-success", has_text=f"Stopping run #{run.id}")).to_be_visible()
    expect(row.locator("[data-run-badge]")).to_have_text("stopped", timeout=30_000)
    wait_run(run, S.STOPPED, timeout=30)
    wait_for(lambda: not process.run_processes(run.id), 30, message="the run's processes gone")
    # the follower read the log to its end and stopped polling
    expect(log).to_have_attribute("data-complete", "1", timeout=10_000)
    expect(page.locator("#launch-agent")).to_be_visible()  # ready for another launch
    assert page.evaluate("window.__sameDocument") is True
    assert run.reason.startswith(f"stopped by {operator.username}")
    context.close()


@pytest.mark.browser
@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_long_log_keeps_only_its_last_200_kb_in_the_page(
    chromium,
    ready_rig,  # noqa: F811
    asgi_server,
    operator,
):
    from playwright.sync_api import expect

    rig = ready_rig("seq 1 60000; sleep 300", slug="chatty")  # about 350 KB of output
    context, page = log_in(chromium, asgi_server, operator.username)
    page.goto(f"{asgi_server}/rigs/{rig.id}/")
    expect(page.locator("#live-indicator")).to_have_text("Live")
    page.click("#launch-agent")
    run = wait_for(lambda: AgentRun.objects.filter(rig=rig).first(), 10, message="the run")
    log = page.locator(f"#run-log-{run.id}")
    expect(log).to_contain_text("\n60000\n", timeout=30_000)
    expect(log).to_have_attribute("data-trimmed", "1")
    size = log.evaluate("el => el.textContent.length")
    assert 150_000 < size <= 200 * 1024, size
    assert log.evaluate("el => el.textContent.startsWith('1\\n')") is False
    assert log.evaluate("el => el.childNodes.length") == 1  # one text node, appended to
    page.click("#stop-run")
    wait_run(run, S.STOPPED, timeout=30)
    wait_for(lambda: not process.run_processes(run.id), 30, message="the run's processes gone")
    context.close()
