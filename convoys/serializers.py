"""API shapes for convoys' resources (the field names are the contract in DESIGN.md).

Input serializers only check shapes and types (bounded numbers, lists of strings); the rules
live in the services, which name the field they refuse.
"""

import re
from decimal import Decimal

from django.core.validators import ProhibitNullCharactersValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from common.api import InputSerializer
from common.params import id_or_none
from convoys.models import Bead, BeadDependency, Convoy
from convoys.validators import ACCEPTANCE_ITEM_MAX, ACCEPTANCE_MAX_ITEMS
from notifications.serializers import NotificationSerializer
from rigs.serializers import AgentSerializer

MAX_ID = 2**63 - 1
# Long texts have a field limit below the request body limit (GASTOWN_MAX_BODY_BYTES): every
# list that carries them stays small. Titles are limited by their columns (200, beads 300).
TEXT_MAX = 20_000
REASON_MAX = 2_000
PLAN_MAX = 1_000_000  # a Markdown plan; the body limit (1 MiB) comes first


def text_field(**kwargs) -> serializers.CharField:
    """A description-like text: optional, may be blank, at most TEXT_MAX characters."""
    return serializers.CharField(required=False, allow_blank=True, max_length=TEXT_MAX, **kwargs)


def id_field(**kwargs) -> serializers.IntegerField:
    """An object id: a positive integer that fits the database."""
    return serializers.IntegerField(min_value=1, max_value=MAX_ID, **kwargs)


class IdOrNameField(serializers.Field):
    """A thing by id (`42`, `"42"`) or by a name matching `name_pattern`; resolved by the
    view. Subclasses say which name."""

    name_pattern = ""
    default_error_messages = {"invalid": "not an id (a positive integer) or a name."}

    def to_internal_value(self, data):
        if isinstance(data, bool):
            self.fail("invalid")
        if isinstance(data, int):
            if not 1 <= data <= MAX_ID:
                self.fail("invalid")
            return data
        if isinstance(data, str):
            value = data.strip()
            if id_or_none(value) is not None:
                return id_or_none(value)
            if not value.isdigit() and re.fullmatch(self.name_pattern, value):
                return value
        self.fail("invalid")

    def to_representation(self, value):
        return value


@extend_schema_field(
    {
        "oneOf": [
            {"type": "integer", "minimum": 1, "maximum": MAX_ID},
            {"type": "string", "pattern": "^gt-[0-9a-z]+$"},
        ],
        "description": "a bead's id or its short id (`gt-a1b2`)",
    }
)
class BeadRefField(IdOrNameField):
    """A bead by id (`42`, `"42"`) or short id (`"gt-a1b2"`)."""

    name_pattern = r"gt-[0-9a-zA-Z]{1,13}"
    default_error_messages = {"invalid": "not a bead id (a positive integer or gt-…)."}


# --- beads --------------------------------------------------------------------------------------


class BeadSerializer(serializers.ModelSerializer):
    assignee = serializers.SlugRelatedField(
        slug_field="name", read_only=True, allow_null=True, help_text="the agent's name"
    )
    claimed_by_run = serializers.IntegerField(
        source="claimed_by_run_id",
        read_only=True,
        allow_null=True,
        help_text="the agent run that holds the claim (its end makes the bead open again)",
    )

    class Meta:
        model = Bead
        fields = [
            "id",
            "short_id",
            "rig",
            "leg",
            "convoy",
            "repository",
            "title",
            "description",
            "acceptance_criteria",
            "status",
            "priority",
            "type",
            "assignee",
            "labels",
            "defer_until",
            "close_reason",
            "claimed_at",
            "lease_expires_at",
            "claimed_by_run",
            "closed_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "lease_expires_at": {
                "help_text": "while in progress: when the claim lapses (the bead is open again) "
                "unless a heartbeat renews it"
            }
        }


class BeadLinkSerializer(serializers.Serializer):
    """One edge of a bead's graph, seen from the bead."""

    id = serializers.IntegerField(help_text="the other bead's id")
    short_id = serializers.CharField()
    title = serializers.CharField()
    status = serializers.ChoiceField(choices=Bead.Status.choices)
    rig = serializers.IntegerField(allow_null=True)
    type = serializers.ChoiceField(choices=BeadDependency.Type.choices)


class BeadDetailSerializer(BeadSerializer):
    ready = serializers.BooleanField(read_only=True, help_text="can be started now")
    not_ready_reasons = serializers.ListField(
        child=serializers.CharField(), read_only=True, help_text="why not (empty when ready)"
    )
    dependencies = BeadLinkSerializer(many=True, read_only=True, help_text="what it depends on")
    dependents = BeadLinkSerializer(many=True, read_only=True, help_text="what depends on it")

    class Meta(BeadSerializer.Meta):
        fields = [
            *BeadSerializer.Meta.fields,
            "ready",
            "not_ready_reasons",
            "dependencies",
            "dependents",
        ]
        read_only_fields = fields


class BeadCreateSerializer(InputSerializer):
    title = serializers.CharField(max_length=300)
    rig = id_field(required=False, allow_null=True, help_text="the rig it belongs to")
    leg = id_field(required=False, allow_null=True)
    convoy = id_field(required=False, allow_null=True, help_text="a convoy's pool (no rig)")
    repository = id_field(required=False, allow_null=True, help_text="a repository's pool")
    description = text_field(default="")
    acceptance_criteria = text_field(default="")
    priority = serializers.IntegerField(required=False, default=2, min_value=0, max_value=4)
    type = serializers.ChoiceField(choices=Bead.Type.choices, required=False, default="task")
    labels = serializers.ListField(
        child=serializers.CharField(max_length=100), required=False, default=list, max_length=50
    )
    defer_until = serializers.DateTimeField(required=False, allow_null=True, default=None)
    blocks = serializers.ListField(
        child=BeadRefField(),
        required=False,
        default=list,
        max_length=50,
        help_text="beads that cannot start until this one closes (they depend on it)",
    )
    discovered_from = BeadRefField(
        required=False, allow_null=True, help_text="the bead whose work turned this one up"
    )


class BeadUpdateSerializer(InputSerializer):
    """PATCH: the fields a bead's owner may edit. A status change goes through the bead's state
    machine (closing dispatches the work it unblocks); `in_progress` is reached by claiming."""

    title = serializers.CharField(max_length=300, required=False)
    description = text_field()
    acceptance_criteria = text_field()
    priority = serializers.IntegerField(required=False, min_value=0, max_value=4)
    type = serializers.ChoiceField(choices=Bead.Type.choices, required=False)
    labels = serializers.ListField(
        child=serializers.CharField(max_length=100), required=False, max_length=50
    )
    defer_until = serializers.DateTimeField(required=False, allow_null=True)
    status = serializers.ChoiceField(choices=Bead.Status.choices, required=False)
    close_reason = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=REASON_MAX,
        help_text="why: the close reason, or, with another status change, a comment on the bead",
    )
    assignee = serializers.CharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        max_length=63,
        help_text="an agent's name; null or '' clears it. Agents may set only themselves "
        "(or nobody); operators anyone",
    )


class BeadClaimSerializer(InputSerializer):
    agent = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=63,
        help_text="operators only: claim on behalf of this agent (agents claim for themselves)",
    )


class BeadCloseSerializer(InputSerializer):
    reason = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=REASON_MAX
    )


class BeadCloseResultSerializer(serializers.Serializer):
    bead = BeadSerializer()
    unblocked = BeadSerializer(many=True, help_text="beads this close made ready")


class DependencyCreateSerializer(InputSerializer):
    depends_on = BeadRefField(help_text="this bead depends on that one")
    type = serializers.ChoiceField(
        choices=BeadDependency.Type.choices, required=False, default="blocks"
    )


class DependencySerializer(serializers.ModelSerializer):
    bead = serializers.SlugRelatedField(slug_field="short_id", read_only=True)
    depends_on = serializers.SlugRelatedField(slug_field="short_id", read_only=True)

    class Meta:
        model = BeadDependency
        fields = ["id", "bead", "depends_on", "type", "created_at"]
        read_only_fields = fields


class DependencyRemoveResultSerializer(serializers.Serializer):
    bead = serializers.CharField(source="bead.short_id", read_only=True)
    depends_on = serializers.CharField(source="depends_on.short_id", read_only=True)
    unblocked = BeadSerializer(many=True, help_text="beads this removal made ready")


# --- convoys ------------------------------------------------------------------------------------


class LegInputSerializer(InputSerializer):
    key = serializers.CharField(max_length=63, help_text="names the leg inside its convoy")
    title = serializers.CharField(max_length=200)
    description = text_field(help_text="the leg's brief: what to build, for its agent")
    acceptance = serializers.ListField(
        child=serializers.CharField(max_length=ACCEPTANCE_ITEM_MAX),
        required=False,
        max_length=ACCEPTANCE_MAX_ITEMS,
        help_text="a checklist: what must be true when the leg is done (one line each)",
    )
    rig = id_field(required=False, allow_null=True, help_text="an existing rig")
    agent = serializers.CharField(
        required=False,
        allow_blank=True,
        allow_null=True,
        max_length=63,
        help_text="or: an agent to provision a rig for at launch",
    )
    scope = serializers.ListField(
        child=serializers.CharField(max_length=500), required=False, max_length=100
    )
    watch = serializers.ListField(
        child=serializers.CharField(max_length=500), required=False, max_length=100
    )
    depends_on = serializers.ListField(
        child=serializers.CharField(max_length=63),
        required=False,
        max_length=100,
        help_text="keys of the legs this one waits for",
    )


class ConvoyCreateSerializer(InputSerializer):
    title = serializers.CharField(max_length=200)
    description = text_field(default="")
    repository = id_field()
    target_branch = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=200
    )
    slug = serializers.CharField(required=False, allow_blank=True, default="", max_length=63)
    use_integration_branch = serializers.BooleanField(required=False, default=False)
    budget_usd = serializers.DecimalField(
        max_digits=10,
        decimal_places=2,
        min_value=Decimal(0),
        required=False,
        allow_null=True,
        default=None,
        help_text="Agent spend limit in dollars: no new agent runs once it is reached.",
    )
    review_required = serializers.IntegerField(
        required=False,
        default=0,
        min_value=0,
        max_value=10,
        help_text="Approvals its legs' merge requests need before they are gated (the larger "
        "of this and the repository's).",
    )
    legs = LegInputSerializer(many=True, max_length=200)


class ConvoyCancelSerializer(InputSerializer):
    reason = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=REASON_MAX
    )


class LegSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    key = serializers.CharField()
    title = serializers.CharField()
    description = serializers.CharField(help_text="the leg's brief ('' when none)")
    acceptance = serializers.ListField(
        child=serializers.CharField(), help_text="the leg's acceptance checklist"
    )
    state = serializers.CharField()
    rig = serializers.IntegerField(allow_null=True)
    rig_slug = serializers.CharField(allow_null=True)
    rig_state = serializers.CharField(allow_null=True)
    depends_on = serializers.ListField(child=serializers.CharField(), help_text="leg keys")
    wave = serializers.IntegerField(help_text="1: depends on nothing; n: on earlier waves")


class ProgressSerializer(serializers.Serializer):
    landed = serializers.IntegerField()
    total = serializers.IntegerField(help_text="legs, cancelled ones left out")
    percent = serializers.IntegerField()


class ConvoySerializer(serializers.ModelSerializer):
    """A convoy with its legs and progress (the list and the detail share this shape)."""

    integration_branch = serializers.CharField(read_only=True)
    progress = serializers.SerializerMethodField()
    legs = serializers.SerializerMethodField()
    budget_reached = serializers.SerializerMethodField()

    class Meta:
        model = Convoy
        fields = [
            "id",
            "slug",
            "title",
            "description",
            "repository",
            "target_branch",
            "state",
            "use_integration_branch",
            "integration_branch",
            "progress",
            "legs",
            "budget_usd",
            "spent_usd",
            "budget_reached",
            "review_required",
            "created_at",
            "launched_at",
            "landed_at",
            "updated_at",
        ]
        read_only_fields = fields

    @extend_schema_field(ProgressSerializer)
    def get_progress(self, convoy: Convoy) -> dict:
        return convoy.rollup["progress"]

    @extend_schema_field(LegSerializer(many=True))
    def get_legs(self, convoy: Convoy) -> list[dict]:
        return convoy.rollup["legs"]

    def get_budget_reached(self, convoy: Convoy) -> bool:
        """Agents' spend reached the budget: no new agent runs are launched for it."""
        return convoy.budget_reached


class BlockedLegSerializer(serializers.Serializer):
    leg = serializers.CharField()
    id = serializers.IntegerField()
    reasons = serializers.ListField(child=serializers.CharField())


class LandingMergeRequestSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    state = serializers.CharField()
    reason = serializers.CharField()


class ConvoyDetailSerializer(ConvoySerializer):
    blocked = serializers.SerializerMethodField()
    waves = serializers.SerializerMethodField()
    landing_merge_request = serializers.SerializerMethodField()

    class Meta(ConvoySerializer.Meta):
        fields = [*ConvoySerializer.Meta.fields, "blocked", "waves", "landing_merge_request"]
        read_only_fields = fields

    @extend_schema_field(BlockedLegSerializer(many=True))
    def get_blocked(self, convoy: Convoy) -> list[dict]:
        return [
            {"leg": b["leg"], "id": b["id"], "reasons": b["reasons"]}
            for b in convoy.rollup["blocked"]
        ]

    @extend_schema_field(
        serializers.ListField(child=serializers.ListField(child=serializers.CharField()))
    )
    def get_waves(self, convoy: Convoy) -> list[list[str]]:
        return convoy.rollup["waves"]

    @extend_schema_field(
        LandingMergeRequestSerializer(
            allow_null=True, help_text="with an integration branch: the merge landing it"
        )
    )
    def get_landing_merge_request(self, convoy: Convoy) -> dict | None:
        return convoy.rollup["landing_merge_request"]


class PlanTextField(serializers.CharField):
    """A plan's text. NUL characters pass here: the plan parser names the line they are on."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.validators = [
            v for v in self.validators if not isinstance(v, ProhibitNullCharactersValidator)
        ]


class ConvoyImportSerializer(InputSerializer):
    repository = id_field()
    plan = PlanTextField(
        allow_blank=True,
        trim_whitespace=False,
        max_length=PLAN_MAX,
        help_text="the plan's Markdown text (docs/convoys.md, 'Plan format')",
    )
    launch = serializers.BooleanField(
        required=False, default=False, help_text="launch the convoy once created"
    )


class ConvoyImportResultSerializer(ConvoyDetailSerializer):
    beads = BeadSerializer(many=True, read_only=True, help_text="the beads of the plan's tasks")

    class Meta(ConvoyDetailSerializer.Meta):
        fields = [*ConvoyDetailSerializer.Meta.fields, "beads"]
        read_only_fields = fields


class PlanErrorSerializer(serializers.Serializer):
    line = serializers.IntegerField(
        required=False, help_text="an invalid plan's errors: 1-based line of the plan"
    )
    field = serializers.CharField(
        allow_null=True, help_text="the input it is about (`legs[1].depends_on`)"
    )
    code = serializers.CharField()
    message = serializers.CharField()


class ConvoyImportErrorDetailSerializer(serializers.Serializer):
    """The error body, with `errors` for an invalid plan (`invalid_plan`)."""

    code = serializers.CharField(help_text="`invalid_plan`, or another bad input's code")
    message = serializers.CharField(help_text="for an invalid plan: every error, one a line")
    field = serializers.CharField(allow_null=True, help_text="`plan` for an invalid plan")
    errors = PlanErrorSerializer(
        many=True,
        help_text="every problem; an invalid plan's errors by line (the first 100)",
    )
    count = serializers.IntegerField(
        required=False, help_text="an invalid plan's number of errors (all of them)"
    )


class ConvoyImportErrorSerializer(serializers.Serializer):
    error = ConvoyImportErrorDetailSerializer()


# --- me -------------------------------------------------------------------------------------------


class AssignmentSerializer(serializers.Serializer):
    rig = serializers.IntegerField()
    leg = serializers.IntegerField()
    leg_key = serializers.CharField()
    leg_title = serializers.CharField()
    leg_state = serializers.CharField()
    convoy = serializers.IntegerField()
    convoy_title = serializers.CharField()
    convoy_state = serializers.CharField()
    merge_target = serializers.CharField()


class WorkFinishedSerializer(serializers.Serializer):
    landed = serializers.BooleanField(help_text="its leg (or, with no leg, its branch) landed")
    leg = serializers.IntegerField(allow_null=True)
    leg_key = serializers.CharField(allow_null=True)
    leg_state = serializers.CharField(allow_null=True)
    convoy = serializers.IntegerField(allow_null=True)
    convoy_state = serializers.CharField(allow_null=True)
    merge_request = serializers.IntegerField(allow_null=True, help_text="what landed it")
    merge_commit = serializers.CharField(help_text="where it landed ('' when it did not)")
    text = serializers.CharField(help_text="one line for people")


class MeRigSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    slug = serializers.CharField()
    repository = serializers.IntegerField()
    repository_name = serializers.CharField()
    state = serializers.CharField()
    branch = serializers.CharField()
    worktree_path = serializers.CharField()
    merge_target = serializers.CharField()
    head_commit = serializers.CharField(help_text="the branch tip (read from git now if it can)")
    ahead = serializers.IntegerField(help_text="commits not on the repository's target branch")
    behind = serializers.IntegerField(help_text="target commits not on the branch")
    counts_fresh = serializers.BooleanField(
        help_text="head, ahead and behind were read from git now; false: the last sync's"
    )
    counts_as_of = serializers.CharField(
        help_text="how old they are: 'read from git just now', 'as of the last sync at HH:MM "
        "UTC' or 'never synced'"
    )
    dirty = serializers.BooleanField(help_text="uncommitted changes, as of the last sync")
    dirty_as_of = serializers.CharField(help_text="'as of the last sync at …' or 'never synced'")
    last_synced_at = serializers.DateTimeField(allow_null=True)
    work_finished = WorkFinishedSerializer(
        allow_null=True, help_text="set when the rig's work is done: its leg landed or ended"
    )
    assignment = AssignmentSerializer(allow_null=True)
    unacked_notifications = serializers.IntegerField()


class MeUserSerializer(serializers.Serializer):
    username = serializers.CharField()
    roles = serializers.ListField(child=serializers.CharField())


class MeSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["agent", "person"])
    agent = AgentSerializer(allow_null=True)
    user = MeUserSerializer(allow_null=True)
    rigs = MeRigSerializer(many=True)
    assignment = AssignmentSerializer(
        allow_null=True, help_text="the current leg of the first rig that has one"
    )
    unread_notifications = serializers.IntegerField(help_text="unacked, over all your rigs")


# --- coordination: messages, escalations, answers, ended turns, comments, blocked beads ----------

MESSAGE_MAX = 4_000  # convoys.services.coordination.MESSAGE_MAX


@extend_schema_field(
    {
        "oneOf": [
            {"type": "integer", "minimum": 1, "maximum": MAX_ID},
            {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]*$", "maxLength": 63},
        ],
        "description": "an id, or a slug",
    }
)
class RefField(IdOrNameField):
    """A rig or convoy by id (`7`, `"7"`) or by slug (`"api"`)."""

    name_pattern = r"[a-z0-9][a-z0-9-]{0,62}"
    default_error_messages = {"invalid": "not an id (a positive integer) or a slug."}


class TextOnlyField(serializers.CharField):
    """A CharField that takes a JSON string only (DRF's turns numbers into text: `"answer": 7`
    is a client's mistake, not an answer)."""

    default_error_messages = {"not_text": "must be text (a JSON string)."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("not_text")
        return super().to_internal_value(data)


def message_text(**kwargs) -> serializers.CharField:
    return TextOnlyField(max_length=MESSAGE_MAX, **kwargs)


class MessageCreateSerializer(InputSerializer):
    """Who to tell (exactly one of `to`, `to_rig`, `to_agent`, `to_convoy`; or none with
    `reply_to`: back to the rig that sent that notice) and what."""

    to = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=63,
        help_text="a rig's slug, an agent's name or a convoy's slug (whichever it names)",
    )
    to_rig = RefField(required=False, allow_null=True, help_text="a rig: id or slug")
    to_agent = serializers.CharField(
        required=False, allow_blank=True, max_length=63, help_text="an agent: its rig with work"
    )
    to_convoy = RefField(
        required=False, allow_null=True, help_text="a convoy: id or slug; every rig of it with work"
    )
    text = message_text(help_text="the message (at most 4,000 characters)")
    reply_to = id_field(
        required=False, allow_null=True, help_text="the notification this answers (threads by it)"
    )
    from_rig = RefField(
        required=False,
        allow_null=True,
        help_text="agents: which of your rigs it is from (default: yours on that repository)",
    )


class MessageResultSerializer(serializers.Serializer):
    to = serializers.CharField(help_text="how it was addressed: `rig api`, `convoy auth`, …")
    count = serializers.IntegerField(help_text="how many rigs it reached")
    messages = NotificationSerializer(many=True, help_text="one per rig told")


class EscalationCreateSerializer(InputSerializer):
    text = message_text(help_text="what you ask a person (at most 4,000 characters)")
    bead = BeadRefField(required=False, allow_null=True, help_text="the bead it is about")
    rig = RefField(
        required=False, allow_null=True, help_text="which of your rigs asks (default: yours)"
    )


class AnswerSerializer(InputSerializer):
    answer = message_text(help_text="the answer; it reaches the agent's inbox as a message")


class AnswerResultSerializer(serializers.Serializer):
    notification = NotificationSerializer(help_text="the escalation, now resolved")
    reply = NotificationSerializer(
        allow_null=True, help_text="the message in the rig's inbox (`reply_to` the escalation)"
    )


class TurnEndSerializer(InputSerializer):
    status = serializers.ChoiceField(
        choices=["escalated", "deferred"],
        help_text="escalated: a person must decide; deferred: set aside for now",
    )
    reason = TextOnlyField(max_length=REASON_MAX, help_text="why (at most 2,000)")


class BeadCommentSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    bead = serializers.CharField(source="bead.short_id", help_text="the bead's short id")
    author = serializers.CharField(help_text="the agent's or the person's name")
    author_kind = serializers.SerializerMethodField(
        help_text="agent, person, or gastown (a note the server wrote: a claim that lapsed)"
    )
    text = serializers.CharField()
    created_at = serializers.DateTimeField()

    def get_author_kind(self, comment) -> str:
        if comment.author_agent_id:
            return "agent"
        return "person" if comment.author_user_id else "gastown"


class BeadCommentCreateSerializer(InputSerializer):
    text = message_text(help_text="the comment (at most 4,000 characters)")


class BlockerSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    short_id = serializers.CharField()
    title = serializers.CharField()
    status = serializers.ChoiceField(choices=Bead.Status.choices)
    rig = serializers.IntegerField(allow_null=True)
    assignee = serializers.CharField(allow_null=True)


class BlockedBeadSerializer(BeadSerializer):
    reasons = serializers.ListField(
        child=serializers.CharField(), help_text="why it cannot start, one line each"
    )
    blocked_by = BlockerSerializer(
        many=True, help_text="the open beads it waits for (directly, `blocks` edges)"
    )

    class Meta(BeadSerializer.Meta):
        fields = [*BeadSerializer.Meta.fields, "reasons", "blocked_by"]
        read_only_fields = fields


class ReviewReplySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    author = serializers.CharField(help_text="the person's or the agent's name")
    by_agent = serializers.BooleanField()
    text = serializers.CharField()
    created_at = serializers.DateTimeField()


class ReviewCommentSerializer(serializers.Serializer):
    """A review comment with its thread of answers, oldest first."""

    id = serializers.IntegerField()
    rig = serializers.IntegerField(source="rig_id")
    merge_request = serializers.IntegerField(source="merge_request_id", allow_null=True)
    author = serializers.CharField()
    path = serializers.CharField(help_text="the file; empty for a comment on the whole change")
    line = serializers.IntegerField(allow_null=True)
    side = serializers.CharField(help_text="new: a line of the head; old: a deleted line")
    commit = serializers.CharField(help_text="the head commit of the diff it was made on")
    base_commit = serializers.CharField()
    excerpt = serializers.CharField(help_text="the line's text when the comment was made")
    text = serializers.CharField()
    state = serializers.ChoiceField(choices=["open", "resolved"])
    resolved_by = serializers.CharField()
    resolved_commit = serializers.CharField()
    resolved_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    replies = ReviewReplySerializer(many=True, source="replies.all")


class ReviewCommentCreateSerializer(InputSerializer):
    rig = serializers.IntegerField(min_value=1, help_text="the rig whose change it is about")
    text = message_text(help_text="the comment (at most 4,000 characters)")
    path = serializers.CharField(
        required=False, allow_blank=True, max_length=1024, help_text="empty: the whole change"
    )
    line = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=10_000_000
    )
    side = serializers.ChoiceField(choices=["new", "old"], required=False, default="new")
    commit = serializers.RegexField(
        r"^[0-9a-f]{40}$", required=False, allow_blank=True, help_text="the diff's head commit"
    )
    base_commit = serializers.RegexField(r"^[0-9a-f]{40}$", required=False, allow_blank=True)
    excerpt = serializers.CharField(
        required=False, allow_blank=True, max_length=2000, trim_whitespace=False
    )
    merge_request = serializers.IntegerField(required=False, allow_null=True, min_value=1)


class ReviewReplyCreateSerializer(InputSerializer):
    text = message_text(help_text="the answer (at most 4,000 characters)")


class ReviewResolveSerializer(InputSerializer):
    commit = serializers.RegexField(
        r"^[0-9a-f]{40}$",
        required=False,
        allow_blank=True,
        help_text="the commit that addressed it (full id)",
    )
