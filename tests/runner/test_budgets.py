"""Budgets without processes: the window, the levels and their one notice, the stop mark, the
refusal, the scheduler's halving, the API's roles and query counts, the board and the admin.
(Real runs crossing a limit: test_budget_runs.py.)"""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from common import process
from events.models import Event
from notifications.models import Notification, NotificationVersion
from rigs.models import Rig
from runner import budgets, limits, operations, services
from runner.limits import DispatchBook, RunScope
from runner.models import AgentRun, Budget
from runner.usage import Usage
from tests import factories
from tests.api.conftest import error_of

pytestmark = pytest.mark.django_db
S = AgentRun.State


def ready_rig(agent, **kw) -> Rig:
    return factories.rig(agent=agent, state=Rig.State.READY, worktree_path="/tmp/none", **kw)


def past_run(rig: Rig, usd: str = "0", tokens: int = 0, ago: timedelta | None = None, **kw):
    """A run that reported `usd` and `tokens`, ended `ago` (None: still going)."""
    now = timezone.now()
    kw.setdefault("state", S.SUCCEEDED if ago is not None else S.RUNNING)
    return AgentRun.objects.create(
        rig=rig,
        agent=rig.agent,
        command="x",
        cost_usd=Decimal(usd),
        input_tokens=tokens,
        finished_at=now - ago if ago is not None else None,
        **kw,
    )


def budget(**kw) -> Budget:
    kw.setdefault("window", Budget.Window.DAY)
    return budgets.budget_save(budget=Budget(**kw), by="test")


def spend(run: AgentRun, usd: str) -> AgentRun:
    return budgets.agent_run_usage_add(run=run, usage=Usage(cost_usd=Decimal(usd)))


@pytest.fixture
def agent():
    return factories.agent(name="spender", runtime="scripted")


# --- the window ---------------------------------------------------------------------------------


def test_a_window_counts_the_runs_that_went_in_it(agent):
    rig = ready_rig(agent)
    past_run(rig, "5.00", ago=timedelta(days=2))  # out of the day, in the week
    past_run(rig, "3.00", ago=timedelta(days=8))  # only in the life
    past_run(rig, "1.00", tokens=100, ago=timedelta(hours=1))
    past_run(rig, "0.50", tokens=20)  # still going: counts in every window
    past_run(ready_rig(factories.agent()), "7.00", ago=timedelta(hours=1))  # someone else's
    day, week, life = (
        budget(agent=agent, window=window, limit_usd=Decimal("10"), limit_tokens=1000)
        for window in ("day", "week", "life")
    )
    found = limits.budget_limits([day, week, life])
    assert (found[day.pk].spent_usd, found[day.pk].spent_tokens) == (Decimal("1.5"), 120)
    assert found[week.pk].spent_usd == Decimal("6.5")
    assert found[life.pk].spent_usd == Decimal("9.5")
    assert found[life.pk].level == "warning" and found[day.pk].level == "ok"
    repository = budget(repository=rig.repository, limit_usd=Decimal("1"))
    assert limits.budget_limits([repository])[repository.pk].spent_usd == Decimal("1.5")
    assert "$1.50 of $1.00 spent in the last 24 hours (150%)" in (
        limits.budget_limits([repository])[repository.pk].figures
    )


# --- levels, notices, stops ---------------------------------------------------------------------


def test_80_percent_warns_once_and_100_percent_asks_a_person_once_and_stops_its_runs(
    agent, settings
):
    settings.GASTOWN_MAX_AGENTS = 4
    rigs = [ready_rig(agent) for _ in range(3)]
    runs = [past_run(rig) for rig in rigs]
    limit = budget(agent=agent, limit_usd=Decimal("1.00"))
    topic = f"budget:{limit.pk}"
    spend(runs[0], "0.50")
    assert not Notification.objects.filter(topic=topic).exists()

    spend(runs[1], "0.30")  # 80%: a warning, on the rig whose run crossed it
    notice = Notification.objects.get(topic=topic)
    assert notice.rig_id == rigs[1].pk and notice.severity == "warning"
    assert "Budget at 80%: the daily budget of agent spender: $0.80 of $1.00" in notice.summary
    assert "at most 2 of its runs go at once" in notice.action  # half of GASTOWN_MAX_AGENTS=4
    spend(runs[2], "0.10")  # 90%: nothing new
    assert Notification.objects.filter(topic=topic).count() == 1
    assert Event.objects.filter(kind="budget.level").count() == 1
    queued_rig = ready_rig(agent)
    queued = services.agent_run_request(rig=queued_rig, requested_by="test")

    stopped = spend(runs[0], "0.20")  # 110%: a person is asked, its runs stop
    assert stopped.stop_by is not None  # the reporting run stops now that its step is over
    notice.refresh_from_db()
    assert Notification.objects.filter(topic=topic).count() == 1  # the same notice, updated
    assert (notice.kind, notice.severity, notice.state) == ("escalation", "critical", "open")
    assert notice.summary.startswith(
        "Needs a person: the daily budget of agent spender is reached: $1.10 of $1.00 spent in "
        "the last 24 hours (110%)"
    )
    versions = NotificationVersion.objects.filter(notification=notice).order_by("revision")
    assert [v.severity for v in versions] == ["warning", "critical"]
    grace = timedelta(seconds=60)
    for run in runs:
        run.refresh_from_db()
        assert run.stop_by is not None and run.stop_by - run.stop_requested_at == grace
        assert run.kill_reason == "budget reached: the daily budget of agent spender"
    queued.refresh_from_db()
    assert queued.state == S.CANCELLED
    assert "the daily budget of agent spender is reached: $1.10 of $1.00" in queued.reason
    assert Event.objects.filter(kind="run.stopping").count() == 3

    spend(runs[1], "0.10")  # reported past the limit: nothing more to say or do
    assert Notification.objects.filter(topic=topic).count() == 1
    assert Event.objects.filter(kind="run.stopping").count() == 3
    levels = Event.objects.filter(kind="budget.level").order_by("id")
    assert [e.payload["to"] for e in levels] == ["warning", "reached"]
    limit.refresh_from_db()
    assert limit.level == "reached"

    with pytest.raises(services.RunConflict) as refused:
        services.agent_run_request(rig=ready_rig(agent), requested_by="test")
    assert refused.value.code == "budget_reached"
    assert "$1.20 of $1.00 spent in the last 24 hours (120%)" in str(refused.value)

    limit.limit_usd = Decimal("5.00")  # a person raises it: the notice is answered
    budgets.budget_save(budget=limit, by="olive")
    notice.refresh_from_db()
    assert notice.state == "resolved" and "back to $1.20 of $5.00" in notice.resolution
    assert Budget.objects.get(pk=limit.pk).level == "ok"
    services.agent_run_request(rig=ready_rig(agent), requested_by="test")  # launches again


def test_a_restart_under_a_reached_budget_is_refused_without_an_escalation_per_run(agent):
    rig = ready_rig(agent)
    budget(agent=agent, limit_usd=Decimal("1.00"))
    past_run(ready_rig(agent), "1.00", ago=timedelta(minutes=5))
    run = past_run(rig)  # was going before the budget was reached (no stop marked)
    services.agent_run_exited(run=run, exit_code=1)
    run.refresh_from_db()
    assert run.state == S.FAILED and run.escalated_at is None
    assert not AgentRun.objects.filter(restart_of=run).exists()
    refused = Event.objects.get(kind="run.refused")
    assert "is reached: $1.00 of $1.00" in refused.payload["reason"]
    assert not Notification.objects.filter(kind="escalation").exists()


def test_tokens_count_like_dollars(agent):
    run = past_run(ready_rig(agent))
    limit = budget(agent=agent, limit_tokens=1000, window="week")
    budgets.agent_run_usage_add(run=run, usage=Usage(input_tokens=600, output_tokens=400))
    assert Budget.objects.get(pk=limit.pk).level == "reached"
    note = Notification.objects.get(topic=f"budget:{limit.pk}")
    assert "1,000 of 1,000 tokens spent in the last 7 days (100%)" in note.summary


def test_a_limit_set_under_the_spend_acts_at_once(agent):
    rig = ready_rig(agent)
    run = past_run(rig, "2.00")
    limit = budget(repository=rig.repository, limit_usd=Decimal("1.00"))
    assert limit.level == "reached"
    run.refresh_from_db()
    assert run.stop_by is not None
    note = Notification.objects.get(topic=f"budget:{limit.pk}")
    assert note.rig_id == rig.pk and note.kind == "escalation"
    budgets.budget_delete(budget=limit, by="olive")
    note.refresh_from_db()
    assert note.state == "resolved" and "deleted by olive" in note.resolution


def test_a_convoys_own_budget_is_one_of_the_limits(agent):
    rig = ready_rig(agent)
    convoy = factories.convoy(repository=rig.repository, title="Payments")
    convoy.budget_usd = Decimal("1.00")
    convoy.save()
    first = past_run(rig, convoy=convoy)
    other = past_run(ready_rig(agent), convoy=convoy)
    spend(first, "0.85")
    warning = Notification.objects.get(topic=f"budget:convoy-{convoy.pk}")
    assert warning.severity == "warning"
    spend(first, "0.35")
    reached = Event.objects.get(kind="convoy.budget_reached")
    assert "reached its budget: $1.20 spent of $1.00" in reached.payload["message"]
    warning.refresh_from_db()
    assert warning.kind == "escalation"
    assert warning.summary.startswith(
        "Needs a person: convoy 'Payments' reached its budget: $1.20 spent of $1.00"
    )
    other.refresh_from_db()
    assert other.stop_by is not None  # stopped after its step, like any budget's runs
    spend(other, "0.10")
    assert Notification.objects.filter(kind="escalation").count() == 1


# --- the scheduler: reached cancels, 80% halves --------------------------------------------------


@pytest.fixture
def no_spawn(monkeypatch, settings):
    """Dispatch without processes: a supervisor is a pid."""
    settings.GASTOWN_MAX_AGENTS = 4
    monkeypatch.setattr(process, "supervisor_spawn", lambda run_id, token: 999_999)


def queue(agent, n: int) -> list[AgentRun]:
    return [services.agent_run_request(rig=ready_rig(agent), requested_by="t") for _ in range(n)]


def going() -> int:
    return AgentRun.objects.filter(state__in=AgentRun.PROCESS_STATES, cost_usd=0).count()


def test_from_80_percent_half_as_many_runs_start_under_it(agent, no_spawn):
    limit = budget(agent=agent, limit_usd=Decimal("1.00"))
    spent = past_run(ready_rig(agent), "0.85", ago=timedelta(hours=1))
    runs = queue(agent, 4)
    assert len(operations.agent_runs_dispatch()) == 2  # half of the machine's 4
    assert operations.agent_runs_dispatch() == []  # the cap is full: the others wait
    assert [r.state for r in AgentRun.objects.filter(pk__in=[r.pk for r in runs])].count(
        S.QUEUED
    ) == 2
    AgentRun.objects.filter(pk=runs[0].pk).update(state=S.SUCCEEDED)  # one ends
    assert len(operations.agent_runs_dispatch()) == 1
    AgentRun.objects.filter(pk=spent.pk).update(cost_usd=Decimal("0.10"))  # under 80% again
    assert len(operations.agent_runs_dispatch()) == 1
    assert going() == 3
    limit.max_agents = 2  # a cap of its own: 2, and 1 from 80%
    budgets.budget_save(budget=limit)
    AgentRun.objects.filter(state=S.RUNNING).update(state=S.SUCCEEDED)
    AgentRun.objects.filter(state=S.STARTING).update(state=S.SUCCEEDED)
    queue(agent, 3)
    assert len(operations.agent_runs_dispatch()) == 2
    AgentRun.objects.filter(state=S.STARTING).update(state=S.SUCCEEDED)
    AgentRun.objects.filter(pk=spent.pk).update(cost_usd=Decimal("0.90"))
    assert len(operations.agent_runs_dispatch()) == 1


def test_a_queued_run_under_a_reached_budget_is_cancelled_with_the_figures(agent, no_spawn):
    (run,) = queue(agent, 1)
    budget(agent=agent, limit_usd=Decimal("1.00"))
    past_run(ready_rig(agent), "1.00", ago=timedelta(hours=1))  # reached after it was queued
    assert operations.agent_runs_dispatch() == []
    run.refresh_from_db()
    assert run.state == S.CANCELLED
    assert run.reason.startswith("the daily budget of agent spender is reached: $1.00 of $1.00")


def test_the_schedulers_budget_reads_do_not_grow_with_the_runs(agent, no_spawn):
    budget(agent=agent, limit_usd=Decimal("100"))
    convoy = factories.convoy(budget_usd=Decimal("100"))
    budget(convoy=convoy, limit_tokens=10**6)
    counts = []
    for n in (2, 8):
        runs = [
            past_run(ready_rig(agent), convoy=convoy if i % 2 else None, state=S.QUEUED)
            for i in range(n)
        ]
        runs = list(AgentRun.objects.filter(pk__in=[r.pk for r in runs]).select_related("rig"))
        with CaptureQueriesContext(connection) as queries:
            book = DispatchBook(runs)
            assert {book.verdict(run) for run in runs} == {"go"}
        counts.append(len(queries))
    assert counts[0] == counts[1] <= 4, counts


def test_a_launch_check_is_two_queries(agent):
    rig = ready_rig(agent)
    budget(agent=agent, limit_usd=Decimal("1"))
    budget(repository=rig.repository, limit_usd=Decimal("1"))
    with CaptureQueriesContext(connection) as queries:
        assert limits.limit_reached(RunScope(agent.pk, rig.repository_id, None)) is None
    assert len(queries) == 2  # the budgets, one aggregate


# --- the API -------------------------------------------------------------------------------------


@pytest.fixture
def nobody(make_person):
    return make_person("nobody")


def test_operators_set_change_and_delete_budgets(operator, agent):
    body = {"agent": "spender", "window": "week", "limit_usd": "12.50", "max_agents": 3}
    response = operator.post("/api/v1/budgets/", body, format="json")
    assert response.status_code == 201, response.content
    made = response.json()
    assert made["scope"] == "agent" and made["agent"] == "spender"
    assert made["target"] == "agent spender" and made["limit_usd"] == "12.50"
    assert (made["spent_usd"], made["percent"], made["level"], made["cap"]) == (
        "0.0000",
        0,
        "ok",
        3,
    )
    assert Budget.objects.get(pk=made["id"]).set_by == "op"
    changed = operator.patch(
        f"/api/v1/budgets/{made['id']}/", {"limit_tokens": 5000}, format="json"
    )
    assert changed.status_code == 200, changed.content
    assert changed.json()["limit_tokens"] == 5000 and changed.json()["limit_usd"] == "12.50"
    assert Event.objects.filter(kind="budget.changed").count() == 2
    gone = operator.delete(f"/api/v1/budgets/{made['id']}/")
    assert gone.status_code == 204 and not Budget.objects.exists()


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"limit_usd": "1"}, "scope", "exactly one of agent, repository and convoy"),
        ({"agent": "spender", "repository": 0, "limit_usd": "1"}, "repository", ""),
        ({"agent": "spender"}, "limit_usd", "set a limit in dollars, in tokens, or both"),
        ({"agent": "spender", "limit_usd": "-1"}, "limit_usd", ""),
        ({"agent": "spender", "limit_usd": "1", "window": "month"}, "window", ""),
        ({"agent": "spender", "limit_usd": "1", "max_agents": 0}, "max_agents", ""),
        ({"agent": "nobody-such", "limit_usd": "1"}, "agent", ""),
    ],
)
def test_bad_budgets_are_400_naming_the_field(operator, agent, body, field, words):
    response = operator.post("/api/v1/budgets/", body, format="json")
    assert response.status_code == 400, response.content
    error = error_of(response)
    assert error["field"] == field and words in error["message"]


def test_one_budget_per_target_and_window_and_the_target_stays(operator, agent):
    made = budget(agent=agent, limit_usd=Decimal("1"))
    again = operator.post("/api/v1/budgets/", {"agent": "spender", "limit_usd": "2"}, format="json")
    assert again.status_code == 400
    assert "agent spender already has a day budget" in error_of(again)["message"]
    moved = operator.patch(f"/api/v1/budgets/{made.pk}/", {"agent": None}, format="json")
    assert moved.status_code == 400 and error_of(moved)["field"] == "agent"


def test_viewers_read_agents_read_their_own_and_neither_writes(viewer, nobody, make_agent):
    mine, client = make_agent("mine", runtime="scripted")
    rig = ready_rig(mine)
    own = budget(agent=mine, limit_usd=Decimal("1"))
    repository = budget(repository=rig.repository, limit_usd=Decimal("5"))
    other = budget(agent=factories.agent(name="other"), limit_usd=Decimal("1"))
    assert {b["id"] for b in viewer.get("/api/v1/budgets/").json()["results"]} == {
        own.pk,
        repository.pk,
        other.pk,
    }
    seen = client.get("/api/v1/budgets/").json()["results"]
    assert {b["id"] for b in seen} == {own.pk, repository.pk}  # those over its own runs
    assert client.get(f"/api/v1/budgets/{own.pk}/").status_code == 200
    assert client.get(f"/api/v1/budgets/{other.pk}/").status_code == 404
    for caller in (viewer, client):
        post = caller.post("/api/v1/budgets/", {"agent": "mine", "limit_usd": "9"}, format="json")
        assert post.status_code == 403
        assert error_of(post)["message"] == "Only operators may do this."
        patch = caller.patch(f"/api/v1/budgets/{own.pk}/", {"limit_usd": "9"}, format="json")
        assert patch.status_code == 403
        assert caller.delete(f"/api/v1/budgets/{own.pk}/").status_code == 403
    assert nobody.get("/api/v1/budgets/").status_code == 403
    assert APIClient().get("/api/v1/budgets/").status_code in (401, 403)
    assert Budget.objects.get(pk=own.pk).limit_usd == Decimal("1")


def test_the_list_reads_a_page_in_a_few_queries(viewer, agent):
    def count(n: int) -> int:
        Budget.objects.all().delete()
        for i in range(n):
            rig = ready_rig(factories.agent())
            past_run(rig, "0.40", ago=timedelta(hours=i))
            budget(agent=rig.agent, limit_usd=Decimal("1"), window="week" if i % 2 else "day")
        with CaptureQueriesContext(connection) as queries:
            response = viewer.get("/api/v1/budgets/")
        assert response.status_code == 200 and response.json()["count"] == n
        assert {b["spent_usd"] for b in response.json()["results"]} == {"0.4000"}
        return len(queries)

    assert count(2) == count(12)


# --- the board and the admin ---------------------------------------------------------------------


def test_the_budgets_page_shows_bars_and_operators_set_limits(viewer, operator, agent):
    limit = budget(agent=agent, limit_usd=Decimal("2.00"))
    past_run(ready_rig(agent), "1.70", ago=timedelta(hours=2))
    page = viewer.get("/budgets/").content.decode()
    assert 'href="/budgets/" aria-current="page">Budgets</a>' in page
    assert 'aria-valuenow="85"' in page and "$1.70 of $2.00" in page
    assert "(halved)" in page and "Set a limit" not in page  # viewers read
    factories.convoy(
        title="Search", state="launched", budget_usd=Decimal("10"), spent_usd=Decimal("2.5")
    )
    page = viewer.get("/budgets/").content.decode()
    assert "convoy &#x27;Search&#x27;" in page and "(the convoy's own budget)" in page
    assert "$2.50 of $10.00" in page and 'aria-valuenow="25"' in page
    assert viewer.post("/budgets/set/", {"target": f"agent:{agent.pk}"}).status_code == 403

    form = {"target": f"agent:{agent.pk}", "window": "day", "limit_usd": "$5", "limit_tokens": ""}
    response = operator.post("/budgets/set/", form)
    assert response.status_code == 302
    limit.refresh_from_db()
    assert limit.limit_usd == Decimal("5.00") and Budget.objects.count() == 1  # changed
    form = {"target": f"agent:{agent.pk}", "window": "week", "limit_usd": "", "limit_tokens": ""}
    refused = operator.post("/budgets/set/", form)
    assert refused.status_code == 400
    assert "set a limit in dollars, in tokens, or both" in refused.content.decode()
    assert operator.post(f"/budgets/{limit.pk}/delete/").status_code == 302
    assert not Budget.objects.exists()


def test_the_admin_sets_budgets_through_the_service(admin_client, agent):
    response = admin_client.post(
        reverse("admin:runner_budget_add"),
        {"agent": agent.pk, "window": "day", "limit_usd": "3", "limit_tokens": ""},
    )
    assert response.status_code == 302, response.content.decode()[-2000:]
    made = Budget.objects.get()
    assert made.scope == "agent" and made.set_by == "admin"
    assert Event.objects.filter(kind="budget.changed").exists()
    past_run(ready_rig(agent), "1.50", ago=timedelta(hours=1))
    page = admin_client.get(reverse("admin:runner_budget_changelist")).content.decode()
    assert "$1.50 of $3.00 spent in the last 24 hours (50%)" in page
    change = admin_client.get(reverse("admin:runner_budget_change", args=[made.pk]))
    assert change.status_code == 200
    both = admin_client.post(
        reverse("admin:runner_budget_add"),
        {"agent": agent.pk, "repository": made.agent.rigs.first().repository_id, "limit_usd": "1"},
    )
    assert "exactly one of agent, repository and convoy" in both.content.decode()
