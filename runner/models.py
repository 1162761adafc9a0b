"""Agent runs: one launch of an agent's runtime command in its rig's worktree."""

import secrets

from django.db import models
from django.db.models import Q

from convoys.models import Convoy, Leg
from rigs.models import Agent, Rig, hash_token


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
