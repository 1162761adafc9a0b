"""Metrics read from the database at scrape time: the state of things (merge queues, rigs, runs,
open notices, spend) and the durations already stored on rows (gates, provisions, queue waits).

Read from the rows, they are the same whichever process is scraped and survive restarts; each
family is one grouped query (a histogram's buckets are conditional counts in that query), so a
scrape costs a fixed number of queries however many rows there are.
"""

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import (
    Case,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    Min,
    Q,
    QuerySet,
    Sum,
    Value,
    When,
)
from django.utils import timezone
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from notifications.models import Notification
from rigs.models import MergeRequest, Repository, Rig, RigState
from runner.models import AgentRun

GATE_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
PROVISION_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
WAIT_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


def histogram_family(
    name: str,
    documentation: str,
    rows: QuerySet,
    value: str,
    labels: Mapping[str, str],
    buckets: Sequence[float],
    *,
    duration: bool = False,
) -> HistogramMetricFamily:
    """A histogram of `value` (seconds as a float, or a duration when `duration`) over `rows`,
    grouped by `labels` (label name -> field), in one query: each bucket is a conditional
    count."""

    def bound(seconds: float) -> float | timedelta:
        return timedelta(seconds=seconds) if duration else seconds

    counts = {
        f"le_{i}": Count("pk", filter=Q(**{f"{value}__lte": bound(b)}))
        for i, b in enumerate(buckets)
    }
    grouped = (
        rows.filter(**{f"{value}__isnull": False})
        .values(*labels.values())
        .annotate(n=Count("pk"), total=Sum(value), **counts)
        .order_by(*labels.values())
    )
    family = HistogramMetricFamily(name, documentation, labels=list(labels))
    for row in grouped:
        total = row["total"]
        seconds = total.total_seconds() if isinstance(total, timedelta) else float(total or 0)
        family.add_metric(
            [str(row[field]) for field in labels.values()],
            buckets=[(floatToGoString(b), row[f"le_{i}"]) for i, b in enumerate(buckets)]
            + [("+Inf", row["n"])],
            sum_value=seconds,
        )
    return family


def merge_queues(now: datetime) -> Iterator[Metric]:
    """Depth of each merge queue by state, and how long its oldest queued request has waited.
    Every repository's target branch is listed (at 0 when empty), so a quiet queue is a 0, not
    a missing series."""
    depth = GaugeMetricFamily(
        "gastown_merge_queue_depth",
        "Merge requests in a merge queue now (queued, checking, testing).",
        labels=["repository", "target_branch", "state"],
    )
    oldest = GaugeMetricFamily(
        "gastown_merge_queue_oldest_wait_seconds",
        "How long the oldest queued merge request of a queue has waited (0: none queued).",
        labels=["repository", "target_branch"],
    )
    counts: dict[tuple[str, str, str], int] = {}
    waits: dict[tuple[str, str], float] = {}
    for name, target in Repository.objects.values_list("name", "target_branch").order_by("name"):
        waits[(name, target)] = 0.0
        for state in MergeRequest.ACTIVE_STATES:
            counts[(name, target, state)] = 0
    rows = (
        MergeRequest.objects.filter(state__in=MergeRequest.ACTIVE_STATES)
        .values("repository__name", "target_branch", "state")
        .annotate(n=Count("pk"), first=Min("created_at"))
        .order_by()
    )
    for row in rows:
        queue = (row["repository__name"], row["target_branch"])
        for state in MergeRequest.ACTIVE_STATES:
            counts.setdefault((*queue, state), 0)
        counts[(*queue, row["state"])] = row["n"]
        waits.setdefault(queue, 0.0)
        if row["state"] == MergeRequest.State.QUEUED:
            waits[queue] = max(0.0, (now - row["first"]).total_seconds())
    for key, n in sorted(counts.items()):
        depth.add_metric(list(key), n)
    for key, seconds in sorted(waits.items()):
        oldest.add_metric(list(key), seconds)
    yield depth
    yield oldest


def merge_request_waits() -> Metric:
    waited = MergeRequest.objects.alias(
        wait=ExpressionWrapper(F("started_at") - F("created_at"), output_field=DurationField())
    )
    return histogram_family(
        "gastown_merge_request_wait_seconds",
        "Time merge requests waited in their queue before the queue took them (their latest "
        "attempt).",
        waited,
        "wait",
        {"repository": "repository__name", "target_branch": "target_branch"},
        WAIT_BUCKETS,
        duration=True,
    )


def gates() -> Metric:
    outcomes = MergeRequest.objects.annotate(
        outcome=Case(When(gate_exit_code=0, then=Value("passed")), default=Value("failed"))
    )
    return histogram_family(
        "gastown_gate_duration_seconds",
        "Gate runs by outcome (passed: exit 0); a batch's gate counts for each request it gated.",
        outcomes,
        "gate_seconds",
        {"repository": "repository__name", "outcome": "outcome"},
        GATE_BUCKETS,
    )


def provisions() -> Metric:
    return histogram_family(
        "gastown_rig_provision_duration_seconds",
        "Time to provision a rig (worktree, setup command), for rigs that were provisioned.",
        Rig.objects.all(),
        "provision_seconds",
        {"repository": "repository__name"},
        PROVISION_BUCKETS,
    )


def rigs() -> Iterator[Metric]:
    by_state = GaugeMetricFamily("gastown_rigs", "Rigs by state.", labels=["state"])
    attempts = CounterMetricFamily(
        "gastown_rig_provision_attempts", "Provisioning attempts, over all rigs."
    )
    counts = dict.fromkeys(RigState.values, 0)
    total = 0
    rows = Rig.objects.values("state").annotate(n=Count("pk"), tries=Sum("provision_attempts"))
    for row in rows.order_by():
        counts[row["state"]] = row["n"]
        total += row["tries"] or 0
    for state, n in counts.items():
        by_state.add_metric([state], n)
    attempts.add_metric([], total)
    yield by_state
    yield attempts


def agent_runs() -> Metric:
    family = GaugeMetricFamily(
        "gastown_agent_runs",
        "Agent runs queued, starting or running, by host (empty while queued) and state.",
        labels=["host", "state"],
    )
    rows = (
        AgentRun.objects.filter(state__in=AgentRun.ACTIVE_STATES)
        .values("host", "state")
        .annotate(n=Count("pk"))
        .order_by("host", "state")
    )
    for row in rows:
        family.add_metric([row["host"], row["state"]], row["n"])
    return family


def spend() -> Iterator[Metric]:
    cost = CounterMetricFamily(
        "gastown_agent_cost_usd", "What agent runs cost, by agent (USD).", labels=["agent"]
    )
    tokens = CounterMetricFamily(
        "gastown_agent_tokens", "Model tokens agent runs used.", labels=["agent", "direction"]
    )
    rows = (
        AgentRun.objects.values("agent__name")
        .annotate(cost=Sum("cost_usd"), input=Sum("input_tokens"), output=Sum("output_tokens"))
        .order_by("agent__name")
    )
    for row in rows:
        agent = row["agent__name"]
        cost.add_metric([agent], float(row["cost"] or Decimal(0)))
        tokens.add_metric([agent, "input"], row["input"] or 0)
        tokens.add_metric([agent, "output"], row["output"] or 0)
    yield cost
    yield tokens


def open_notices() -> Metric:
    family = GaugeMetricFamily(
        "gastown_notices_open",
        "Open notices to rigs, by kind and severity (none open: no series).",
        labels=["kind", "severity"],
    )
    rows = (
        Notification.objects.filter(state=Notification.State.OPEN)
        .values("kind", "severity")
        .annotate(n=Count("pk"))
        .order_by("kind", "severity")
    )
    for row in rows:
        family.add_metric([row["kind"], row["severity"]], row["n"])
    return family


class DatabaseCollector:
    """A prometheus_client collector: every family above, read when scraped."""

    def collect(self) -> Iterator[Metric]:
        yield from merge_queues(timezone.now())
        yield merge_request_waits()
        yield gates()
        yield provisions()
        yield from rigs()
        yield agent_runs()
        yield from spend()
        yield open_notices()
