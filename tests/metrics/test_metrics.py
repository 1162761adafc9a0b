"""`/metrics`: who may read it, what it says about seeded data, and what a scrape costs."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from notifications.models import Notification
from rigs.models import MergeRequest, Rig
from rigs.services import agent_create, api_token_create
from runner.models import AgentRun
from tests import factories

METRICS_TOKEN = "scrape-" + "x" * 30

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def metrics_token(settings):
    settings.GASTOWN_METRICS_TOKEN = METRICS_TOKEN


def scrape(client: Client | None = None) -> dict:
    """The exposition parsed: {(sample name, sorted labels): value}."""
    client = client or Client()
    response = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return samples(response.content.decode())


def samples(text: str) -> dict:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, name: str, **labels) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def family_names(text: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(text)}


def person_token(django_user_model, username: str, **flags) -> str:
    user = django_user_model.objects.create_user(username, password="pw-123456789", **flags)
    return api_token_create(user=user)[1]


# --- who may read it -------------------------------------------------------------------------


def test_without_credentials_it_is_401_with_the_scheme_to_use():
    response = Client().get("/metrics")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["error"]["code"] == "not_authenticated"


def test_a_wrong_metrics_token_is_401():
    response = Client().get("/metrics", headers={"Authorization": "Bearer wrong-token-xxxxxxxxx"})
    assert response.status_code == 401


def test_no_metrics_token_configured_refuses_every_bearer(settings):
    settings.GASTOWN_METRICS_TOKEN = ""
    response = Client().get("/metrics", headers={"Authorization": "Bearer "})
    assert response.status_code == 401
    response = Client().get("/metrics", headers={"Authorization": "Bearer anything-at-all-here"})
    assert response.status_code == 401


def test_the_metrics_token_and_an_admins_api_token_may_read(django_user_model):
    assert (
        Client().get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).status_code
        == 200
    )
    for username, flags in (("root", {"is_superuser": True}), ("staff", {"is_staff": True})):
        token = person_token(django_user_model, username, **flags)
        response = Client().get("/metrics", headers={"Authorization": f"Token {token}"})
        assert response.status_code == 200, (username, response.content)


def test_operators_viewers_and_agents_are_403(django_user_model):
    for role in ("operator", "viewer"):
        user = django_user_model.objects.create_user(role, password="pw-123456789")
        user.groups.add(Group.objects.get_or_create(name=role)[0])
        token = api_token_create(user=user)[1]
        response = Client().get("/metrics", headers={"Authorization": f"Token {token}"})
        assert response.status_code == 403, role
    _, agent_token = agent_create(name="scraper-agent")
    response = Client().get("/metrics", headers={"Authorization": f"Token {agent_token}"})
    assert response.status_code == 403


def test_an_admin_session_without_a_token_is_401(admin_client):
    assert admin_client.get("/metrics").status_code == 401


def test_only_get(django_user_model):
    response = Client().post("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 405


# --- what it says ----------------------------------------------------------------------------


@pytest.fixture
def seeded():
    """One repository with a merge queue, gates, provisions, runs, spend and notices."""
    now = timezone.now()
    repo = factories.repository(name="app")
    agent = factories.agent(name="claude-7")

    def rig(**kw) -> Rig:
        return factories.rig(repository=repo, agent=agent, **kw)

    def mr(state: str, created_ago: float, **kw) -> MergeRequest:
        made = factories.merge_request(rig=rig(), state=state, **kw)
        MergeRequest.objects.filter(pk=made.pk).update(
            created_at=now - timedelta(seconds=created_ago)
        )
        return made

    mr("queued", 120)
    mr("queued", 10)
    mr("testing", 50, started_at=now - timedelta(seconds=45))
    mr(
        "merged",
        300,
        started_at=now - timedelta(seconds=270),
        gate_exit_code=0,
        gate_seconds=12.0,
    )
    mr(
        "failed",
        900,
        started_at=now - timedelta(seconds=895),
        gate_exit_code=1,
        gate_seconds=400.0,
    )
    rig(state="ready", provision_seconds=3.5, provision_attempts=1)
    rig(state="failed", provision_attempts=3)
    for state, host, cost in (
        ("running", "host-a", "1.25"),
        ("queued", "", "0"),
        ("succeeded", "host-a", "0.50"),
    ):
        AgentRun.objects.create(
            rig=rig(),
            agent=agent,
            state=state,
            host=host,
            command="true",
            cost_usd=Decimal(cost),
            input_tokens=1000,
            output_tokens=10,
        )
    target = rig()
    factories.notification(rig=target, kind="overlap", severity="warning")
    factories.notification(rig=factories.rig(repository=repo), kind="overlap", severity="warning")
    factories.notification(rig=target, kind="escalation", severity="critical")
    factories.notification(rig=target, kind="info", state=Notification.State.RESOLVED)
    return repo


def test_the_families_exist_and_reflect_the_database(seeded):
    Client().get("/healthz")
    response = Client().get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    text = response.content.decode()
    names = family_names(text)
    for family in (
        "gastown_http_requests",
        "gastown_http_request_duration_seconds",
        "gastown_websocket_clients",
        "gastown_merge_queue_depth",
        "gastown_merge_queue_oldest_wait_seconds",
        "gastown_merge_request_wait_seconds",
        "gastown_gate_duration_seconds",
        "gastown_rig_provision_duration_seconds",
        "gastown_rigs",
        "gastown_rig_provision_attempts",
        "gastown_agent_runs",
        "gastown_agent_cost_usd",
        "gastown_agent_tokens",
        "gastown_notices_open",
    ):
        assert family in names, family
    found = samples(text)
    queue = {"repository": "app", "target_branch": "main"}
    assert value(found, "gastown_merge_queue_depth", **queue, state="queued") == 2
    assert value(found, "gastown_merge_queue_depth", **queue, state="checking") == 0
    assert value(found, "gastown_merge_queue_depth", **queue, state="testing") == 1
    assert 119 < value(found, "gastown_merge_queue_oldest_wait_seconds", **queue) < 180
    # waits: 5 s (testing), 30 s (merged), 5 s (failed)
    assert value(found, "gastown_merge_request_wait_seconds_count", **queue) == 3
    assert value(found, "gastown_merge_request_wait_seconds_bucket", **queue, le="5.0") == 2
    assert value(found, "gastown_merge_request_wait_seconds_bucket", **queue, le="15.0") == 2
    assert value(found, "gastown_merge_request_wait_seconds_bucket", **queue, le="30.0") == 3
    assert value(found, "gastown_merge_request_wait_seconds_sum", **queue) == pytest.approx(40)

    passed = {"repository": "app", "outcome": "passed"}
    failed = {"repository": "app", "outcome": "failed"}
    assert value(found, "gastown_gate_duration_seconds_count", **passed) == 1
    assert value(found, "gastown_gate_duration_seconds_sum", **passed) == 12.0
    assert value(found, "gastown_gate_duration_seconds_bucket", **passed, le="5.0") == 0
    assert value(found, "gastown_gate_duration_seconds_bucket", **passed, le="15.0") == 1
    assert value(found, "gastown_gate_duration_seconds_bucket", **failed, le="300.0") == 0
    assert value(found, "gastown_gate_duration_seconds_bucket", **failed, le="600.0") == 1
    assert value(found, "gastown_gate_duration_seconds_bucket", **failed, le="+Inf") == 1

    assert value(found, "gastown_rig_provision_duration_seconds_count", repository="app") == 1
    assert value(found, "gastown_rig_provision_duration_seconds_sum", repository="app") == 3.5
    assert value(found, "gastown_rigs", state="failed") == 1
    assert value(found, "gastown_rigs", state="archived") == 0
    assert value(found, "gastown_rig_provision_attempts_total") == 4

    assert value(found, "gastown_agent_runs", host="host-a", state="running") == 1
    assert value(found, "gastown_agent_runs", host="", state="queued") == 1
    assert ("gastown_agent_runs", (("host", "host-a"), ("state", "succeeded"))) not in found
    assert value(found, "gastown_agent_cost_usd_total", agent="claude-7") == 1.75
    assert value(found, "gastown_agent_tokens_total", agent="claude-7", direction="input") == 3000

    assert value(found, "gastown_notices_open", kind="overlap", severity="warning") == 2
    assert value(found, "gastown_notices_open", kind="escalation", severity="critical") == 1
    assert ("gastown_notices_open", (("kind", "info"), ("severity", "info"))) not in found

    healthz = {"view": "healthz", "method": "GET", "status": "200"}
    assert value(found, "gastown_http_requests_total", **healthz) >= 1
    assert (
        value(found, "gastown_http_request_duration_seconds_count", view="healthz", method="GET")
        >= 1
    )


def test_requests_are_counted_by_view_and_status():
    before = scrape()
    client = Client()
    client.get("/no-such-page/")
    client.get("/no-such-page/")
    client.get("/api/v1/no-such-thing/")
    after = scrape()

    def counted(view: str) -> float:
        key = (
            "gastown_http_requests_total",
            (("method", "GET"), ("status", "404"), ("view", view)),
        )
        return after[key] - before.get(key, 0)

    assert counted("unmatched") == 2  # no URL matched: one label, not one per path
    assert counted("gastown_site.api_urls.not_found") == 1


def test_a_scrape_costs_the_same_few_queries_however_many_rows(seeded, django_assert_num_queries):
    client = Client()
    with django_assert_num_queries(9):
        scrape(client)
    # more of everything: another repository, queue, rigs, runs and notices
    for _ in range(5):
        repo = factories.repository()
        for state in ("queued", "testing", "merged"):
            factories.merge_request(
                rig=factories.rig(repository=repo, provision_seconds=1.0),
                state=state,
                started_at=timezone.now(),
                gate_seconds=3.0,
                gate_exit_code=0,
            )
        factories.notification(rig=factories.rig(repository=repo), kind="overlap")
    with django_assert_num_queries(9):
        found = scrape(client)
    # 6 queues x 4 active states (awaiting_review, queued, checking, testing)
    assert len({labels for name, labels in found if name == "gastown_merge_queue_depth"}) == 24
