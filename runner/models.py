"""Agent runs (one launch of an agent's runtime command in its rig's worktree) and the budgets
that limit what runs may spend."""

import secrets
from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q

from convoys.models import Convoy, Leg
from rigs.models import Agent, Repository, Rig, hash_token


class AgentRunState(models.TextChoices):
    QUEUED = "queued", "queued (waiting for a slot, its rig or its backoff)"
    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"
    CANCELLED = "cancelled"


class AgentRun(models.Model):
    """One attempt at running an agent's command. A restart is a new run (`restart_of`), so
    every attempt keeps its own log, exit code and cost."""

    State = AgentRunState

    S = State
    TRANSITIONS = {
        S.QUEUED: {S.STARTING, S.CANCELLED},
        S.STARTING: {S.RUNNING, S.FAILED, S.STOPPED},
        S.RUNNING: {S.SUCCEEDED, S.FAILED, S.STOPPED},
        S.SUCCEEDED: set(),
        S.FAILED: set(),
        S.STOPPED: set(),
        S.CANCELLED: set(),
    }
    ACTIVE_STATES = (S.QUEUED, S.STARTING, S.RUNNING)
    # Holding one of the machine's agent slots.
    PROCESS_STATES = (S.STARTING, S.RUNNING)
    TOKEN_PREFIX = "gtr_"

    rig = models.ForeignKey(Rig, on_delete=models.CASCADE, related_name="runs")
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="runs")
    convoy = models.ForeignKey(
        Convoy,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="runs",
        help_text="The convoy whose budget pays for this run.",
    )
    leg = models.ForeignKey(Leg, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    state = models.CharField(max_length=20, choices=State.choices, default=State.QUEUED)
    command = models.TextField(help_text="Run by /bin/sh -c in the worktree.")
    attempt = models.PositiveSmallIntegerField(default=1)
    restart_of = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    not_before = models.DateTimeField(null=True, blank=True, help_text="Backoff: start no sooner.")
    requested_by = models.CharField(max_length=150, blank=True)
    reason = models.TextField(blank=True, help_text="Why it was queued, or why it ended so.")
    host = models.CharField(max_length=255, blank=True)
    supervisor_pid = models.IntegerField(null=True, blank=True)
    pid = models.IntegerField(null=True, blank=True, help_text="Also the process group id.")
    exit_code = models.IntegerField(null=True, blank=True, help_text="Negative: killed by signal.")
    log_path = models.CharField(max_length=1024, blank=True)
    token_hash = models.CharField(max_length=64, blank=True, db_index=True, editable=False)
    stop_requested_at = models.DateTimeField(null=True, blank=True)
    stop_by = models.DateTimeField(
        null=True,
        blank=True,
        help_text="A graceful stop (a budget reached): the supervisor stops the agent at its "
        "next usage report (the end of a step), or at this time at the latest.",
    )
    kill_reason = models.CharField(max_length=200, blank=True)
    last_output_at = models.DateTimeField(null=True, blank=True)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=4, default=0)
    escalated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["rig"],
                condition=Q(state__in=["queued", "starting", "running"]),
                name="agent_run_one_active_per_rig",
            ),
            models.CheckConstraint(
                condition=Q(state__in=AgentRunState.values), name="agent_run_state_valid"
            ),
            models.CheckConstraint(condition=Q(cost_usd__gte=0), name="agent_run_cost_positive"),
        ]
        indexes = [
            models.Index(fields=["state", "host"], name="agent_run_state_host"),
            models.Index(fields=["rig", "-created_at"], name="agent_run_rig_recent"),
            # a budget's spend over its window (runner.limits): runs going or ended since
            models.Index(fields=["agent", "finished_at"], name="agent_run_agent_finished"),
            models.Index(fields=["convoy", "finished_at"], name="agent_run_convoy_finished"),
        ]

    def __str__(self) -> str:
        return f"run {self.pk} of {self.agent_id} in rig {self.rig_id} ({self.state})"

    @property
    def is_active(self) -> bool:
        return self.state in self.ACTIVE_STATES

    def issue_token(self) -> str:
        """A token that acts as the run's agent while the run lives (never stored raw)."""
        raw = self.TOKEN_PREFIX + secrets.token_urlsafe(32)
        self.token_hash = hash_token(raw)
        return raw


class BudgetScope(models.TextChoices):
    AGENT = "agent"
    REPOSITORY = "repository"
    CONVOY = "convoy"


class BudgetWindow(models.TextChoices):
    DAY = "day", "day (the last 24 hours)"
    WEEK = "week", "week (the last 7 days)"
    LIFE = "life", "life (all time)"


class BudgetLevel(models.TextChoices):
    OK = "ok", "under 80%"
    WARNING = "warning", "80% spent"
    REACHED = "reached", "reached"


class Budget(models.Model):
    """A limit in dollars and/or tokens on what the runs of one agent, one repository or one
    convoy spend over a rolling window. At 80% a warning and half the concurrency; at 100% no
    new run starts under it and its runs stop after their current step (runner/budgets.py).
    A convoy's own `budget_usd` is read as one more such limit (window `life`), without a row."""

    Scope = BudgetScope
    Window = BudgetWindow
    Level = BudgetLevel

    scope = models.CharField(max_length=12, choices=Scope.choices)
    agent = models.ForeignKey(
        Agent, on_delete=models.CASCADE, null=True, blank=True, related_name="budgets"
    )
    repository = models.ForeignKey(
        Repository, on_delete=models.CASCADE, null=True, blank=True, related_name="budgets"
    )
    convoy = models.ForeignKey(
        Convoy, on_delete=models.CASCADE, null=True, blank=True, related_name="budgets"
    )
    window = models.CharField(max_length=8, choices=Window.choices, default=Window.DAY)
    limit_usd = models.DecimalField(
        max_digits=10,
        decimal_places=2,
        null=True,
        blank=True,
        help_text="Dollars; blank: none.",
        validators=[MinValueValidator(Decimal(0), "a limit cannot be negative.")],
    )
    limit_tokens = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Input plus output tokens; blank: none."
    )
    max_agents = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Runs at once under this budget (blank: the machine's GASTOWN_MAX_AGENTS); "
        "halved from 80% spent.",
    )
    # What the last check found, so that a level is announced once (runner/budgets.py).
    level = models.CharField(max_length=8, choices=Level.choices, default=Level.OK, editable=False)
    level_at = models.DateTimeField(null=True, blank=True, editable=False)
    set_by = models.CharField(max_length=150, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["scope", "id"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(
                        scope="agent",
                        agent__isnull=False,
                        repository__isnull=True,
                        convoy__isnull=True,
                    )
                    | Q(
                        scope="repository",
                        agent__isnull=True,
                        repository__isnull=False,
                        convoy__isnull=True,
                    )
                    | Q(
                        scope="convoy",
                        agent__isnull=True,
                        repository__isnull=True,
                        convoy__isnull=False,
                    )
                ),
                name="budget_scope_target",
                violation_error_message="A budget is on exactly one agent, repository or convoy.",
            ),
            models.CheckConstraint(
                condition=Q(limit_usd__isnull=False) | Q(limit_tokens__isnull=False),
                name="budget_has_a_limit",
                violation_error_message="Set a limit in dollars, in tokens, or both.",
            ),
            models.CheckConstraint(
                condition=Q(limit_usd__isnull=True) | Q(limit_usd__gte=0),
                name="budget_usd_non_negative",
            ),
            models.CheckConstraint(
                condition=Q(window__in=BudgetWindow.values), name="budget_window_valid"
            ),
            models.CheckConstraint(condition=Q(level__in=BudgetLevel.values), name="budget_level"),
            # one limit per target and window
            models.UniqueConstraint(
                fields=["agent", "window"],
                condition=Q(agent__isnull=False),
                name="budget_one_per_agent_window",
                violation_error_message="This agent already has a budget for this window.",
            ),
            models.UniqueConstraint(
                fields=["repository", "window"],
                condition=Q(repository__isnull=False),
                name="budget_one_per_repository_window",
                violation_error_message="This repository already has a budget for this window.",
            ),
            models.UniqueConstraint(
                fields=["convoy", "window"],
                condition=Q(convoy__isnull=False),
                name="budget_one_per_convoy_window",
                violation_error_message="This convoy already has a budget for this window.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.target_label}: {self.window} budget"

    @property
    def target(self) -> Agent | Repository | Convoy | None:
        return {"agent": self.agent, "repository": self.repository, "convoy": self.convoy}.get(
            self.scope
        )

    @property
    def target_id(self) -> int | None:
        ids = {"agent": self.agent_id, "repository": self.repository_id, "convoy": self.convoy_id}
        return ids.get(self.scope)

    @property
    def target_label(self) -> str:
        """'agent claude-1', 'repository app', "convoy 'Payments'"."""
        target = self.target
        if target is None:
            return self.scope
        if self.scope == BudgetScope.AGENT:
            return f"agent {target.name}"
        if self.scope == BudgetScope.REPOSITORY:
            return f"repository {target.name}"
        return f"convoy '{target.title}'"
