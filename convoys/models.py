"""Convoys and their legs, beads and their dependencies."""

from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q

from convoys.validators import validate_acceptance
from rigs.models import Agent, MergeRequest, Repository, Rig
from rigs.validators import validate_branch_name, validate_globs, validate_slug


class ConvoyState(models.TextChoices):
    DRAFT = "draft"
    LAUNCHED = "launched"
    BLOCKED = "blocked"
    LANDING = "landing"
    LANDED = "landed"
    CANCELLED = "cancelled"


class Convoy(models.Model):
    """A coordinated batch of work spanning several rigs, tracked as one unit."""

    State = ConvoyState

    S = State
    TRANSITIONS = {
        S.DRAFT: {S.LAUNCHED, S.CANCELLED},
        S.LAUNCHED: {S.BLOCKED, S.LANDING, S.LANDED, S.CANCELLED},
        S.BLOCKED: {S.LAUNCHED, S.LANDING, S.LANDED, S.CANCELLED},
        S.LANDING: {S.LAUNCHED, S.BLOCKED, S.LANDED, S.CANCELLED},
        # Adding a leg to a landed convoy reopens it.
        S.LANDED: {S.LAUNCHED},
        S.CANCELLED: set(),
    }
    # Launched and not finished: legs move, merges land, the state is derived.
    ACTIVE_STATES = (S.LAUNCHED, S.BLOCKED, S.LANDING)

    slug = models.CharField(max_length=63, unique=True, validators=[validate_slug])
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    repository = models.ForeignKey(Repository, on_delete=models.PROTECT, related_name="convoys")
    target_branch = models.CharField(max_length=200, validators=[validate_branch_name])
    state = models.CharField(max_length=20, choices=State.choices, default=State.DRAFT)
    use_integration_branch = models.BooleanField(
        default=False, help_text="Legs merge into convoy/<slug>; the convoy lands as one merge."
    )
    budget_usd = models.DecimalField(
        max_digits=10,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0), "a budget cannot be negative.")],
    )
    review_required = models.PositiveSmallIntegerField(
        default=0,
        validators=[MaxValueValidator(10)],
        help_text="Approvals its legs' merge requests need before they are gated (the larger "
        "of this and the repository's).",
    )
    # as precise as a run's cost: many sub-cent reports add up
    spent_usd = models.DecimalField(max_digits=14, decimal_places=4, default=0, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    landing_merge_request = models.ForeignKey(
        MergeRequest,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        editable=False,
        help_text="With an integration branch: the merge request landing convoy/<slug>.",
    )
    launched_at = models.DateTimeField(null=True, blank=True, editable=False)
    landed_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(state__in=ConvoyState.values), name="convoy_state_valid"
            ),
            models.CheckConstraint(
                condition=Q(budget_usd__isnull=True) | Q(budget_usd__gte=0),
                name="convoy_budget_non_negative",
            ),
        ]
        indexes = [models.Index(fields=["state", "updated_at"], name="convoy_state_updated")]

    def __str__(self) -> str:
        return self.title

    @property
    def budget_reached(self) -> bool:
        """Its agents spent the budget: no new agent runs are launched for it."""
        return self.budget_usd is not None and self.spent_usd >= self.budget_usd

    @property
    def integration_branch(self) -> str:
        return f"convoy/{self.slug}" if self.use_integration_branch else ""


class LegState(models.TextChoices):
    PENDING = "pending", "pending (waiting for dependencies)"
    READY = "ready"
    WORKING = "working"
    MERGING = "merging"
    LANDED = "landed"
    CANCELLED = "cancelled"


class Leg(models.Model):
    """One rig's piece of a convoy."""

    State = LegState

    S = State
    TRANSITIONS = {
        S.PENDING: {S.READY, S.CANCELLED},
        S.READY: {S.PENDING, S.WORKING, S.MERGING, S.LANDED, S.CANCELLED},
        S.WORKING: {S.READY, S.MERGING, S.LANDED, S.CANCELLED},
        S.MERGING: {S.WORKING, S.LANDED, S.CANCELLED},
        S.LANDED: set(),
        S.CANCELLED: set(),
    }
    OPEN_STATES = (S.PENDING, S.READY, S.WORKING, S.MERGING)
    # Handed to its rig: the rig can move it forward.
    MOVING_STATES = (S.READY, S.WORKING, S.MERGING)

    convoy = models.ForeignKey(Convoy, on_delete=models.CASCADE, related_name="legs")
    key = models.CharField(
        max_length=63, validators=[validate_slug], help_text="Names the leg inside its convoy."
    )
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    acceptance = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_acceptance],
        help_text="A checklist: what must be true when the leg is done (short items).",
    )
    rig = models.ForeignKey(
        Rig, on_delete=models.PROTECT, null=True, blank=True, related_name="legs"
    )
    agent = models.ForeignKey(
        Agent,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="legs",
        help_text="Agent to provision a rig for at launch, when no rig is given.",
    )
    scope = models.JSONField(default=list, blank=True, validators=[validate_globs])
    watch = models.JSONField(default=list, blank=True, validators=[validate_globs])
    state = models.CharField(max_length=20, choices=State.choices, default=State.PENDING)
    position = models.PositiveSmallIntegerField(default=0)
    depends_on = models.ManyToManyField(
        "self", symmetrical=False, through="LegDependency", related_name="dependents", blank=True
    )
    landed_merge_request = models.ForeignKey(
        MergeRequest, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    landed_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["convoy_id", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["convoy", "key"], name="leg_unique_key"),
            models.CheckConstraint(condition=Q(state__in=LegState.values), name="leg_state_valid"),
        ]
        indexes = [models.Index(fields=["rig", "state"], name="leg_rig_state")]

    def __str__(self) -> str:
        return f"{self.convoy.slug}:{self.key}" if self.convoy_id else self.key


class LegDependency(models.Model):
    leg = models.ForeignKey(Leg, on_delete=models.CASCADE, related_name="dependency_links")
    depends_on = models.ForeignKey(Leg, on_delete=models.CASCADE, related_name="dependent_links")

    class Meta:
        verbose_name_plural = "leg dependencies"
        constraints = [
            models.UniqueConstraint(fields=["leg", "depends_on"], name="leg_dependency_unique"),
            models.CheckConstraint(
                condition=~Q(leg=F("depends_on")), name="leg_dependency_not_self"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.leg} depends on {self.depends_on}"


class BeadStatus(models.TextChoices):
    OPEN = "open"
    IN_PROGRESS = "in_progress", "in progress"
    BLOCKED = "blocked"
    DEFERRED = "deferred"
    CLOSED = "closed"


class Bead(models.Model):
    """A task in a rig's dependency graph (or waiting unassigned in a pool)."""

    Status = BeadStatus

    class Type(models.TextChoices):
        TASK = "task"
        BUG = "bug"
        FEATURE = "feature"
        CHORE = "chore"
        EPIC = "epic"

    S = Status
    STATE_FIELD = "status"
    TRANSITIONS = {
        S.OPEN: {S.IN_PROGRESS, S.BLOCKED, S.DEFERRED, S.CLOSED},
        S.IN_PROGRESS: {S.OPEN, S.BLOCKED, S.DEFERRED, S.CLOSED},
        S.BLOCKED: {S.OPEN, S.IN_PROGRESS, S.DEFERRED, S.CLOSED},
        S.DEFERRED: {S.OPEN, S.CLOSED},
        S.CLOSED: {S.OPEN},
    }

    short_id = models.CharField(max_length=16, unique=True, editable=False)
    rig = models.ForeignKey(
        Rig, on_delete=models.CASCADE, null=True, blank=True, related_name="beads"
    )
    leg = models.ForeignKey(
        Leg, on_delete=models.SET_NULL, null=True, blank=True, related_name="beads"
    )
    convoy = models.ForeignKey(
        Convoy,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="pool_beads",
        help_text="Set for a bead waiting in a convoy's pool.",
    )
    repository = models.ForeignKey(
        Repository,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="pool_beads",
        help_text="Set for a bead waiting in a repository's pool.",
    )
    title = models.CharField(max_length=300)
    description = models.TextField(blank=True)
    acceptance_criteria = models.TextField(blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.OPEN)
    priority = models.PositiveSmallIntegerField(
        default=2, validators=[MaxValueValidator(4)], help_text="0 is most urgent, 4 least."
    )
    type = models.CharField(max_length=10, choices=Type.choices, default=Type.TASK)
    assignee = models.ForeignKey(
        Agent, on_delete=models.SET_NULL, null=True, blank=True, related_name="beads"
    )
    labels = models.JSONField(default=list, blank=True)
    defer_until = models.DateTimeField(null=True, blank=True)
    close_reason = models.TextField(blank=True)
    discovered_from_merge_request = models.ForeignKey(
        MergeRequest, on_delete=models.SET_NULL, null=True, blank=True, related_name="follow_ups"
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    # A claim is a lease (convoys/services/leases.py): it lapses at `lease_expires_at` unless
    # heartbeats renew it, and ends with its run. The run is kept as an id, not a foreign key:
    # runner's AgentRun sits above convoys (the layers), and runner ends its runs' claims.
    lease_expires_at = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="When the claim lapses unless renewed (a heartbeat, the run's output).",
    )
    claimed_by_run_id = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        editable=False,
        help_text="The id of the agent run that holds the claim (its end returns the bead).",
    )
    claimed_from_pool = models.BooleanField(
        default=False,
        editable=False,
        help_text="The claim moved this bead from a pool into the claimant's rig; a claim that "
        "lapses returns it to the pool.",
    )
    closed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["priority", "created_at", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(priority__lte=4), name="bead_priority_range"),
            models.CheckConstraint(
                condition=Q(status__in=BeadStatus.values), name="bead_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(rig__isnull=False)
                | Q(convoy__isnull=False)
                | Q(repository__isnull=False),
                name="bead_has_home",
                violation_error_message="A bead belongs to a rig or waits in a convoy's or "
                "repository's pool.",
            ),
        ]
        indexes = [
            models.Index(fields=["rig", "status", "priority", "created_at"], name="bead_rig_ready"),
            models.Index(fields=["status", "priority", "created_at"], name="bead_status_order"),
            # the lease sweep (claims that lapsed) and a run's claims (renewed, returned)
            models.Index(
                fields=["lease_expires_at"],
                condition=Q(status="in_progress", lease_expires_at__isnull=False),
                name="bead_lease_expiry",
            ),
            models.Index(
                fields=["claimed_by_run_id"],
                condition=Q(claimed_by_run_id__isnull=False),
                name="bead_claim_run",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.short_id} {self.title}"


class BeadDependency(models.Model):
    """`bead` depends on `depends_on` (for `blocks`: it cannot start until that one closes)."""

    class Type(models.TextChoices):
        BLOCKS = "blocks"
        PARENT_CHILD = "parent-child"
        RELATED = "related"
        DISCOVERED_FROM = "discovered-from"

    BLOCKING_TYPES = (Type.BLOCKS, Type.PARENT_CHILD)

    bead = models.ForeignKey(Bead, on_delete=models.CASCADE, related_name="dependencies")
    depends_on = models.ForeignKey(Bead, on_delete=models.CASCADE, related_name="dependents")
    type = models.CharField(max_length=20, choices=Type.choices, default=Type.BLOCKS)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "bead dependencies"
        constraints = [
            models.UniqueConstraint(fields=["bead", "depends_on"], name="bead_dependency_unique"),
            models.CheckConstraint(
                condition=~Q(bead=F("depends_on")), name="bead_dependency_not_self"
            ),
        ]
        indexes = [
            models.Index(fields=["depends_on", "type"], name="bead_dep_reverse"),
            # ready's blocker check: "what does this bead depend on, and how"
            models.Index(fields=["bead", "type", "depends_on"], name="bead_dep_forward"),
            # ready's walk up the hierarchy: small, so the walk probes it instead of hashing
            # every edge
            models.Index(
                fields=["bead", "depends_on"],
                condition=Q(type="parent-child"),
                name="bead_dep_parent",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.bead_id} {self.type} {self.depends_on_id}"


class BeadComment(models.Model):
    """A note on a bead by an agent or a person (`gt comment`): how rigs talk about one task.
    Written once, never edited."""

    bead = models.ForeignKey(Bead, on_delete=models.CASCADE, related_name="comments")
    author_agent = models.ForeignKey(
        Agent, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    author_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    author = models.CharField(
        max_length=150, help_text="The author's name as it was written (agent or user name)."
    )
    text = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["bead_id", "created_at", "id"]
        indexes = [models.Index(fields=["bead", "created_at"], name="bead_comment_order")]

    def __str__(self) -> str:
        return f"{self.author} on {self.bead_id}: {self.text[:40]}"


class ReviewComment(models.Model):
    """A person's comment on a rig's change (the board's diff view), on one line of one file
    or on the whole change (no path), and the thread of answers under it (`reply_to`).

    A line comment keeps where it was made: the head commit of the diff (`commit`), its base
    (`base_commit`), the path, the side (`new`: a line of the head; `old`: a deleted line of
    the base) and the line number, with the line's text (`excerpt`). Later revisions show it
    where that line still is, or as outdated (`rigs.diffs.lines_now`). The rig's agent is told
    through its inbox (a `review_comment` notice); it answers (`gt review reply`) or resolves
    it (`gt review resolve`)."""

    class State(models.TextChoices):
        OPEN = "open"
        RESOLVED = "resolved"

    class Side(models.TextChoices):
        NEW = "new"
        OLD = "old"

    rig = models.ForeignKey(Rig, on_delete=models.CASCADE, related_name="review_comments")
    merge_request = models.ForeignKey(
        MergeRequest, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reply_to = models.ForeignKey(
        "self", on_delete=models.CASCADE, null=True, blank=True, related_name="replies"
    )
    author = models.CharField(max_length=150, help_text="The person's or the agent's name.")
    by_agent = models.BooleanField(default=False)
    commit = models.CharField(max_length=40, blank=True, help_text="Head of the diff it is on.")
    base_commit = models.CharField(max_length=40, blank=True)
    path = models.CharField(max_length=1024, blank=True, help_text="Empty: the whole change.")
    side = models.CharField(max_length=3, choices=Side.choices, default=Side.NEW)
    line = models.PositiveIntegerField(null=True, blank=True)
    excerpt = models.TextField(blank=True, help_text="The line's text when it was made.")
    text = models.TextField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.OPEN)
    resolved_by = models.CharField(max_length=150, blank=True)
    resolved_commit = models.CharField(max_length=40, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["rig", "state"], name="review_comment_rig_state")]
        constraints = [
            models.CheckConstraint(
                condition=Q(state__in=["open", "resolved"]), name="review_comment_state_valid"
            ),
            models.CheckConstraint(
                condition=Q(line__isnull=True) | ~Q(path=""), name="review_comment_line_has_path"
            ),
        ]

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else (self.path or "the change")
        return f"#{self.pk} on {where} by {self.author}"

    @property
    def where(self) -> str:
        if self.path and self.line:
            return f"{self.path}:{self.line}" + (" (deleted line)" if self.side == "old" else "")
        return self.path or "the whole change"
