"""Repositories, agents, rigs and merge requests.

`rigs` knows nothing about convoys: it announces what happened through `rigs.signals`.
"""

import hashlib
import secrets

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from rigs.validators import validate_branch_name, validate_globs, validate_slug


class Repository(models.Model):
    class MergeStrategy(models.TextChoices):
        MERGE = "merge", "merge commit"
        SQUASH = "squash", "squash"
        REBASE = "rebase", "rebase (linear history)"

    name = models.CharField(max_length=63, unique=True, validators=[validate_slug])
    path = models.CharField(max_length=1024, unique=True, help_text="Absolute path on disk.")
    init_if_missing = models.BooleanField(
        default=False,
        help_text="Make a new bare repository at the path (with a first empty commit on the "
        "target branch) if none is there.",
    )
    target_branch = models.CharField(
        max_length=200, default="main", validators=[validate_branch_name]
    )
    gate_command = models.TextField(
        blank=True, help_text="Run in a throwaway worktree of each merge candidate; exit 0 passes."
    )
    gate_timeout_seconds = models.PositiveIntegerField(default=600)
    setup_command = models.TextField(blank=True, help_text="Run once in each new worktree.")
    copy_files = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_globs],
        help_text="Files (e.g. .env) copied from the repository into each new worktree.",
    )
    link_files = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_globs],
        help_text="Files or folders symlinked from the repository into each new worktree.",
    )
    merge_strategy = models.CharField(
        max_length=10, choices=MergeStrategy.choices, default=MergeStrategy.MERGE
    )
    batch_size = models.PositiveSmallIntegerField(
        default=4,
        validators=[MinValueValidator(1), MaxValueValidator(50)],
        help_text="How many queued merge requests are gated together; 1 turns batching off.",
    )
    auto_rebase = models.BooleanField(
        default=False, help_text="Rebase idle, clean rigs for their agents when the target moves."
    )
    review_required = models.PositiveSmallIntegerField(
        default=0,
        validators=[MaxValueValidator(10)],
        help_text="Approvals (by operators, on the merge request's diff) a merge request needs "
        "before it is gated; 0: none. A convoy may ask for more.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "repositories"
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(batch_size__gte=1) & Q(batch_size__lte=50),
                name="repository_batch_size_range",
            ),
        ]

    def __str__(self) -> str:
        return self.name


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class Agent(models.Model):
    """An identity of one AI worker (or a person acting as one)."""

    class Runtime(models.TextChoices):
        SCRIPTED = "scripted", "built-in scripted agent"
        CLAUDE = "claude", "Claude Code"
        CODEX = "codex", "Codex CLI"
        CUSTOM = "custom", "custom command"

    name = models.CharField(max_length=63, unique=True, validators=[validate_slug])
    runtime = models.CharField(max_length=20, choices=Runtime.choices, default=Runtime.CUSTOM)
    runtime_command = models.TextField(
        blank=True,
        help_text="What Gas Town runs (by /bin/sh -c) in the agent's rig worktree, with GT_URL, "
        "GT_TOKEN, GT_RIG set and gt on PATH. Empty: the runtime's preset (scripted: "
        'gastown-agent; claude: claude -p "$(gt prime)" ...; codex: codex exec ...). A custom '
        "agent without a command is never launched: it calls in by itself.",
    )
    token_hash = models.CharField(max_length=64, blank=True, db_index=True, editable=False)
    token_prefix = models.CharField(max_length=8, blank=True, editable=False)
    token_expires_at = models.DateTimeField(null=True, blank=True)
    is_active = models.BooleanField(default=True)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def issue_token(self) -> str:
        """Set a new token and return it; only its hash is stored, so show it once."""
        raw = "gt_" + secrets.token_urlsafe(32)
        self.token_hash = hash_token(raw)
        self.token_prefix = raw[:8]
        return raw

    def token_valid(self, now=None) -> bool:
        now = now or timezone.now()
        return bool(
            self.is_active
            and self.token_hash
            and (self.token_expires_at is None or self.token_expires_at > now)
        )


class RigState(models.TextChoices):
    REQUESTED = "requested"
    PROVISIONING = "provisioning"
    READY = "ready"
    WORKING = "working"
    STALLED = "stalled"
    MERGING = "merging"
    MERGED = "merged"
    FAILED = "failed"
    ARCHIVED = "archived"


class Rig(models.Model):
    """One agent's isolated workspace: a worktree on branch `rig/<slug>`."""

    State = RigState

    S = State
    TRANSITIONS = {
        S.REQUESTED: {S.PROVISIONING, S.FAILED, S.ARCHIVED},
        S.PROVISIONING: {S.READY, S.FAILED, S.ARCHIVED},
        S.READY: {S.WORKING, S.MERGING, S.STALLED, S.ARCHIVED},
        S.WORKING: {S.READY, S.MERGING, S.STALLED, S.ARCHIVED},
        S.STALLED: {S.WORKING, S.READY, S.MERGING, S.ARCHIVED},
        S.MERGING: {S.MERGED, S.WORKING, S.READY, S.STALLED, S.ARCHIVED},
        S.MERGED: {S.WORKING, S.READY, S.MERGING, S.ARCHIVED},
        S.FAILED: {S.REQUESTED, S.ARCHIVED},
        S.ARCHIVED: set(),
    }
    LIVE_STATES = (S.READY, S.WORKING, S.STALLED, S.MERGING, S.MERGED)

    class NotifyLevel(models.TextChoices):
        ALL = "all"
        IMPORTANT = "important"
        MUTED = "muted"

    slug = models.CharField(max_length=63, validators=[validate_slug])
    repository = models.ForeignKey(Repository, on_delete=models.PROTECT, related_name="rigs")
    agent = models.ForeignKey(
        Agent, on_delete=models.SET_NULL, null=True, blank=True, related_name="rigs"
    )
    state = models.CharField(max_length=20, choices=State.choices, default=State.REQUESTED)
    branch = models.CharField(max_length=200, blank=True, validators=[validate_branch_name])
    base_ref = models.CharField(
        max_length=200,
        blank=True,
        help_text="Start from this commit or branch instead of the target.",
    )
    worktree_path = models.CharField(max_length=1024, blank=True)
    base_commit = models.CharField(max_length=40, blank=True)
    head_commit = models.CharField(max_length=40, blank=True)
    target_commit = models.CharField(max_length=40, blank=True, help_text="Target tip at sync.")
    ahead = models.PositiveIntegerField(default=0)
    behind = models.PositiveIntegerField(default=0)
    dirty = models.BooleanField(default=False)
    changed_files = models.JSONField(default=list, blank=True, editable=False)
    scope = models.JSONField(default=list, blank=True, validators=[validate_globs])
    watch = models.JSONField(default=list, blank=True, validators=[validate_globs])
    sparse = models.BooleanField(default=False)
    role = models.CharField(max_length=40, blank=True, help_text="e.g. api, docs, tests, deploy")
    notify_level = models.CharField(
        max_length=10, choices=NotifyLevel.choices, default=NotifyLevel.ALL
    )
    progress = models.PositiveSmallIntegerField(
        default=0, validators=[MaxValueValidator(100)], editable=False
    )
    progress_label = models.CharField(max_length=80, blank=True, editable=False)
    failure_reason = models.TextField(blank=True, editable=False)
    provision_attempts = models.PositiveSmallIntegerField(default=0, editable=False)
    provision_seconds = models.FloatField(null=True, blank=True, editable=False)
    provisioned_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    last_synced_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["repository_id", "slug"]
        constraints = [
            models.UniqueConstraint(fields=["repository", "slug"], name="rig_unique_slug"),
            models.CheckConstraint(condition=Q(progress__lte=100), name="rig_progress_range"),
            models.CheckConstraint(condition=Q(state__in=RigState.values), name="rig_state_valid"),
        ]
        indexes = [
            models.Index(fields=["repository", "state"], name="rig_repo_state"),
            models.Index(fields=["agent", "state"], name="rig_agent_state"),
        ]

    def __str__(self) -> str:
        return f"{self.repository.name}/{self.slug}" if self.repository_id else self.slug

    @property
    def is_live(self) -> bool:
        return self.state in self.LIVE_STATES


class MergeRequestState(models.TextChoices):
    AWAITING_REVIEW = "awaiting_review"
    QUEUED = "queued"
    CHECKING = "checking"
    TESTING = "testing"
    MERGED = "merged"
    CONFLICTED = "conflicted"
    FAILED = "failed"
    SUPERSEDED = "superseded"
    CANCELLED = "cancelled"


class MergeRequest(models.Model):
    """A rig's branch tip queued to land on its target branch."""

    State = MergeRequestState

    S = State
    TRANSITIONS = {
        # awaiting_review: `reviews_required` approvals of its source commit let it queue
        S.AWAITING_REVIEW: {S.QUEUED, S.SUPERSEDED, S.CANCELLED},
        S.QUEUED: {S.CHECKING, S.SUPERSEDED, S.CANCELLED, S.AWAITING_REVIEW},
        # checking → awaiting_review: the branch moved past the approved commit
        S.CHECKING: {
            S.TESTING,
            S.MERGED,
            S.CONFLICTED,
            S.FAILED,
            S.QUEUED,
            S.CANCELLED,
            S.AWAITING_REVIEW,
        },
        # testing → checking: a failed batch is split and its halves rebuilt (bisect).
        S.TESTING: {S.MERGED, S.FAILED, S.CONFLICTED, S.QUEUED, S.CHECKING, S.CANCELLED},
        S.MERGED: set(),
        S.CONFLICTED: set(),
        S.FAILED: set(),
        S.SUPERSEDED: set(),
        S.CANCELLED: set(),
    }
    ACTIVE_STATES = (S.AWAITING_REVIEW, S.QUEUED, S.CHECKING, S.TESTING)

    rig = models.ForeignKey(
        Rig,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="merge_requests",
        help_text="Empty when a whole branch lands (a convoy's integration branch).",
    )
    source_branch = models.CharField(
        max_length=200, validators=[validate_branch_name], help_text="The branch that lands."
    )
    repository = models.ForeignKey(
        Repository, on_delete=models.PROTECT, related_name="merge_requests"
    )
    target_branch = models.CharField(max_length=200, validators=[validate_branch_name])
    state = models.CharField(max_length=20, choices=State.choices, default=State.QUEUED)
    priority = models.PositiveSmallIntegerField(
        default=2, validators=[MaxValueValidator(4)], help_text="0 is most urgent."
    )
    source_commit = models.CharField(max_length=40)
    target_commit = models.CharField(
        max_length=40, blank=True, help_text="Target tip it was checked against."
    )
    merge_commit = models.CharField(max_length=40, blank=True)
    conflicts = models.JSONField(default=list, blank=True)
    changed_paths = models.JSONField(default=list, blank=True)
    gate_exit_code = models.IntegerField(null=True, blank=True)
    gate_log_tail = models.TextField(blank=True)
    gate_seconds = models.FloatField(null=True, blank=True)
    batch_id = models.UUIDField(null=True, blank=True, db_index=True)
    claimed_by = models.CharField(max_length=200, blank=True)
    claim_expires_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    reason = models.TextField(blank=True, help_text="Why it ended the way it did.")
    requested_by = models.CharField(max_length=150, blank=True)
    reviews_required = models.PositiveSmallIntegerField(
        default=0,
        help_text="Approvals of its source commit it needs before it is gated (the repository's "
        "or its convoy's review_required when it was asked).",
    )
    forced = models.BooleanField(
        default=False,
        help_text="Asked with force (`gt done --force`): queued without the open-work check "
        "(open beads, uncommitted changes).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["repository", "source_branch", "target_branch"],
                condition=Q(state__in=["awaiting_review", "queued", "checking", "testing"]),
                name="merge_request_one_active_per_branch",
            ),
            models.CheckConstraint(
                condition=Q(priority__lte=4), name="merge_request_priority_range"
            ),
            models.CheckConstraint(
                condition=Q(state__in=MergeRequestState.values), name="merge_request_state_valid"
            ),
        ]
        indexes = [
            models.Index(
                fields=["repository", "target_branch", "state", "priority", "created_at"],
                name="mr_queue_order",
            ),
        ]

    def __str__(self) -> str:
        return f"MR {self.pk} {self.source_branch} → {self.target_branch} ({self.state})"

    @property
    def is_active(self) -> bool:
        return self.state in self.ACTIVE_STATES


class MergeApproval(models.Model):
    """The review audit trail of a merge request: who approved (or asked for changes on) which
    commit, when. An approval is for one commit: new commits need a new one."""

    class Verdict(models.TextChoices):
        APPROVED = "approved"
        CHANGES_REQUESTED = "changes_requested", "changes requested"

    merge_request = models.ForeignKey(
        MergeRequest, on_delete=models.CASCADE, related_name="approvals"
    )
    commit = models.CharField(max_length=40)
    verdict = models.CharField(max_length=20, choices=Verdict.choices)
    by = models.CharField(max_length=150)
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(verdict__in=["approved", "changes_requested"]),
                name="merge_approval_verdict_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.by} {self.verdict} {self.commit[:10]} (MR {self.merge_request_id})"


class MergeQueueLease(models.Model):
    """Who processes one target branch's queue right now: a lease with an expiry, so there is
    never more than one publisher per target across workers, and a dead worker's lease lapses."""

    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="+")
    target_branch = models.CharField(max_length=200)
    holder = models.CharField(max_length=200)
    expires_at = models.DateTimeField()
    acquired_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["repository", "target_branch"], name="merge_queue_lease_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.repository_id}:{self.target_branch} held by {self.holder}"


class ApiToken(models.Model):
    """A person's personal API token for scripts (`Authorization: Token gtp_…`).

    Only the hash is stored; the token is shown once at creation. It acts with its user's
    roles (Django groups), and may expire or be revoked.
    """

    PREFIX = "gtp_"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, blank=True, help_text="What the token is for.")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    token_prefix = models.CharField(max_length=12, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "personal API token"

    def __str__(self) -> str:
        return f"{self.token_prefix}… ({self.user})"

    def issue(self) -> str:
        """Set a new secret and return it (show it once; only its hash is kept)."""
        raw = self.PREFIX + secrets.token_urlsafe(32)
        self.token_hash = hash_token(raw)
        self.token_prefix = raw[:12]
        return raw

    def valid(self, now=None) -> bool:
        now = now or timezone.now()
        return (
            self.revoked_at is None
            and self.user.is_active
            and (self.expires_at is None or self.expires_at > now)
        )
