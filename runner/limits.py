"""Budgets, the reads: which limits apply to a run (a budget on its agent, its repository or its
convoy, and the convoy's own `budget_usd`), what was spent against each over its window, and
what that means: `warning` from 80% (half as many runs at once), `reached` at 100% (nothing
new starts under it). The writes that follow (notices, stops) are in runner/budgets.py.

Spend is what the runs reported (`AgentRun.cost_usd`, `input_tokens + output_tokens`). A run
counts in a window when it was going at some time in it (not ended, or ended since the window
began), with everything it reported: a run is short next to a day, and counting it whole errs
on the safe side. One aggregate query answers every budget of a check; a convoy's own budget
reads the spend kept on the convoy (`spent_usd`)."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import F, Q, Sum
from django.utils import timezone

from convoys.models import Convoy
from runner.models import AgentRun, Budget
from runner.rules import convoy_budget_message

Level = Budget.Level
Scope = Budget.Scope
Window = Budget.Window
LEVEL_RANK = {Level.OK: 0, Level.WARNING: 1, Level.REACHED: 2}
WARN_PERCENT = 80
WINDOW_LENGTH = {Window.DAY: timedelta(days=1), Window.WEEK: timedelta(days=7), Window.LIFE: None}
WINDOW_TEXT = {
    Window.DAY: "in the last 24 hours",
    Window.WEEK: "in the last 7 days",
    Window.LIFE: "in all",
}
WINDOW_ADJECTIVE = {Window.DAY: "daily", Window.WEEK: "weekly", Window.LIFE: "lifetime"}
# How a run belongs to each scope (a lookup on AgentRun).
RUN_FIELD = {
    Scope.AGENT: "agent_id",
    Scope.REPOSITORY: "rig__repository_id",
    Scope.CONVOY: "convoy_id",
}


@dataclass(frozen=True)
class RunScope:
    """What a run (or a launch) is under: its agent, its repository, its convoy."""

    agent_id: int | None
    repository_id: int | None
    convoy_id: int | None

    @classmethod
    def of(cls, run: AgentRun) -> "RunScope":
        return cls(run.agent_id, run.rig.repository_id, run.convoy_id)

    def target(self, scope: str) -> int | None:
        return {
            Scope.AGENT: self.agent_id,
            Scope.REPOSITORY: self.repository_id,
            Scope.CONVOY: self.convoy_id,
        }[scope]


@dataclass
class Limit:
    """One limit over some runs, with what they spent in its window."""

    scope: str
    target_id: int
    label: str  # "agent claude-1", "repository app", "convoy 'Payments'"
    window: str
    limit_usd: Decimal | None
    limit_tokens: int | None
    max_agents: int | None = None
    budget: Budget | None = None  # None: a convoy's own `budget_usd`
    convoy: Convoy | None = None  # that convoy
    spent_usd: Decimal = Decimal(0)
    spent_tokens: int = 0

    @classmethod
    def of_budget(cls, budget: Budget) -> "Limit":
        return cls(
            scope=budget.scope,
            target_id=budget.target_id,
            label=budget.target_label,
            window=budget.window,
            limit_usd=budget.limit_usd,
            limit_tokens=budget.limit_tokens,
            max_agents=budget.max_agents,
            budget=budget,
        )

    @classmethod
    def of_convoy(cls, convoy: Convoy) -> "Limit":
        return cls(
            scope=Scope.CONVOY,
            target_id=convoy.pk,
            label=f"convoy '{convoy.title}'",
            window=Window.LIFE,
            limit_usd=convoy.budget_usd,
            limit_tokens=None,
            convoy=convoy,
            spent_usd=convoy.spent_usd,
        )

    @property
    def key(self) -> str:
        """Names the limit in its notices' topic and its events."""
        if self.budget is not None:
            return f"budget:{self.budget.pk}"
        return f"budget:convoy-{self.target_id}"

    def _pairs(self, spent_usd: Decimal, spent_tokens: int) -> list[tuple[Decimal, Decimal]]:
        pairs = []
        if self.limit_usd is not None:
            pairs.append((Decimal(spent_usd), Decimal(self.limit_usd)))
        if self.limit_tokens is not None:
            pairs.append((Decimal(spent_tokens), Decimal(self.limit_tokens)))
        return pairs

    def level_at(self, spent_usd: Decimal, spent_tokens: int) -> str:
        """The level these figures mean: whichever of dollars and tokens is further along."""
        pairs = self._pairs(spent_usd, spent_tokens)
        if any(spent >= limit for spent, limit in pairs):
            return Level.REACHED
        if any(spent * 100 >= limit * WARN_PERCENT for spent, limit in pairs):
            return Level.WARNING
        return Level.OK

    @property
    def level(self) -> str:
        return self.level_at(self.spent_usd, self.spent_tokens)

    @property
    def percent(self) -> int:
        """How far along (the further of dollars and tokens), for bars and notices."""
        shares = [
            int(spent * 100 / limit) if limit else 100  # (a limit of 0 is reached at once)
            for spent, limit in self._pairs(self.spent_usd, self.spent_tokens)
        ]
        return min(999, max(shares, default=0))

    def cap(self) -> int | None:
        """How many runs may go at once under it (None: no cap of its own): `max_agents`, and
        from 80% spent half of it (or half the machine's slots), at least one."""
        if LEVEL_RANK[self.level] >= LEVEL_RANK[Level.WARNING]:
            return max(1, (self.max_agents or settings.GASTOWN_MAX_AGENTS) // 2)
        return self.max_agents

    def applies(self, scope: RunScope) -> bool:
        return scope.target(self.scope) == self.target_id

    @property
    def title(self) -> str:
        """ "daily budget of agent claude-1"."""
        return f"{WINDOW_ADJECTIVE[self.window]} budget of {self.label}"

    @property
    def figures(self) -> str:
        """ "$1.20 of $1.00 and 900 of 10,000 tokens spent in the last 24 hours (120%)"."""
        parts = []
        if self.limit_usd is not None:
            parts.append(f"${self.spent_usd:,.2f} of ${self.limit_usd:,.2f}")
        if self.limit_tokens is not None:
            parts.append(f"{self.spent_tokens:,} of {self.limit_tokens:,} tokens")
        return f"{' and '.join(parts)} spent {WINDOW_TEXT[self.window]} ({self.percent}%)"

    def refusal(self) -> str:
        """Why nothing starts under it (it is reached)."""
        if self.budget is None and self.convoy is not None:
            return convoy_budget_message(self.convoy)  # the words convoys always had
        return f"the {self.title} is reached: {self.figures}; no new agent runs start under it"


def budgets_applying(scopes: Iterable[RunScope], *, lock: bool = False) -> list[Budget]:
    """The budgets over any of these runs (one query; `lock`: their rows, for a check that
    may act on them)."""
    agents, repositories, convoys = set(), set(), set()
    for scope in scopes:
        agents.add(scope.agent_id)
        repositories.add(scope.repository_id)
        convoys.add(scope.convoy_id)
    query = (
        Q(agent_id__in=agents - {None})
        | Q(repository_id__in=repositories - {None})
        | Q(convoy_id__in=convoys - {None})
    )
    budgets = Budget.objects.filter(query).select_related("agent", "repository", "convoy")
    if lock:
        budgets = budgets.select_for_update(of=("self",))
    return list(budgets.order_by("id"))


def spend_fill(limits: list[Limit], now: datetime | None = None) -> list[Limit]:
    """Fill in what was spent against each budget over its window: one aggregate query for them
    all (a conditional sum each). A convoy's own budget already carries its spend."""
    now = now or timezone.now()
    runs = Q()
    sums = {}
    for limit in limits:
        if limit.budget is None:
            continue
        mine = Q(**{RUN_FIELD[limit.scope]: limit.target_id})
        runs |= mine
        length = WINDOW_LENGTH[limit.window]
        if length is not None:
            mine &= Q(finished_at__isnull=True) | Q(finished_at__gte=now - length)
        sums[f"usd_{limit.budget.pk}"] = Sum("cost_usd", filter=mine)
        sums[f"tokens_{limit.budget.pk}"] = Sum(F("input_tokens") + F("output_tokens"), filter=mine)
    if not sums:
        return limits
    row = AgentRun.objects.filter(runs).aggregate(**sums)
    for limit in limits:
        if limit.budget is not None:
            limit.spent_usd = row[f"usd_{limit.budget.pk}"] or Decimal(0)
            limit.spent_tokens = row[f"tokens_{limit.budget.pk}"] or 0
    return limits


def limits_of(budgets: Iterable[Budget], convoys: Iterable[Convoy] = ()) -> list[Limit]:
    """The limits of these budgets and convoys (those with a `budget_usd`), their spend filled
    in. Convoys' own budgets come first: their refusal keeps the words it always had."""
    limits = [Limit.of_convoy(c) for c in convoys if c.budget_usd is not None]
    limits += [Limit.of_budget(b) for b in budgets]
    return spend_fill(limits)


def budget_limits(budgets: Iterable[Budget]) -> dict[int, Limit]:
    """Each budget's limit with its spend, by budget id (one aggregate query for a page)."""
    return {limit.budget.pk: limit for limit in limits_of(budgets)}


def limits_for(scope: RunScope, convoy: Convoy | None = None, *, lock: bool = False) -> list[Limit]:
    """Every limit over a run (or a launch): 1 or 2 queries (`convoy`: the run's, as read by
    the caller; fetched when not given)."""
    if convoy is None and scope.convoy_id is not None:
        convoy = Convoy.objects.get(pk=scope.convoy_id)
    return limits_of(budgets_applying([scope], lock=lock), [convoy] if convoy else [])


def limit_reached(scope: RunScope, convoy: Convoy | None = None) -> Limit | None:
    """The first limit over a launch that is reached (None: it may start)."""
    return next((lm for lm in limits_for(scope, convoy) if lm.level == Level.REACHED), None)


class DispatchBook:
    """What the scheduler needs of budgets for the queued runs it looks at: their limits, the
    spend against each and how many runs go under each, read once (four queries at most,
    however many runs), then kept up to date as it starts runs."""

    def __init__(self, runs: list[AgentRun]) -> None:
        scopes = [RunScope.of(run) for run in runs]
        convoy_ids = {s.convoy_id for s in scopes if s.convoy_id is not None}
        convoys = Convoy.objects.filter(pk__in=convoy_ids, budget_usd__isnull=False)
        budgets = budgets_applying(scopes) if scopes else []
        self.limits = limits_of(budgets, list(convoys) if convoy_ids else [])
        self.live: list[RunScope] = []
        if any(limit.cap() is not None for limit in self.limits):
            self.live = [
                RunScope(*row)
                for row in AgentRun.objects.filter(state__in=AgentRun.PROCESS_STATES).values_list(
                    "agent_id", "rig__repository_id", "convoy_id"
                )
            ]

    def verdict(self, run: AgentRun) -> str:
        """'go', 'wait' (a cap is full: it starts when a run under it ends) or why it may not
        start at all (a limit is reached)."""
        scope = RunScope.of(run)
        mine = [limit for limit in self.limits if limit.applies(scope)]
        for limit in mine:
            if limit.level == Level.REACHED:
                return limit.refusal()
        for limit in mine:
            cap = limit.cap()
            if cap is not None and sum(limit.applies(live) for live in self.live) >= cap:
                return "wait"
        return "go"

    def started(self, run: AgentRun) -> None:
        self.live.append(RunScope.of(run))
