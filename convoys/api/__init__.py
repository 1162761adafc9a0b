"""Thin DRF views for the agents' side of Gas Town: validate, call one service or selector,
serialize. Domain refusals (`common.errors.Refusal`) become their status in `common.api`.

- `me.py`: who am I, and the prime briefing (`convoys.briefing`);
- `convoys.py`: convoys; `beads.py`: the task graph (a rig's inbox is `notifications.api`);
- `merge_requests.py`: a rig asks to land its branch;
- `coordination.py`: messages, escalations and their answers, ended turns, comments on beads,
  releasing a claim, blocked beads;
- `base.py`: reading a body, finding an object or a bead, the bead write check.
"""

from convoys.api.beads import (
    BeadClaimView,
    BeadCloseView,
    BeadDependencyDetailView,
    BeadDependencyView,
    BeadDetailView,
    BeadListView,
    bead_row,
)
from convoys.api.convoys import (
    ConvoyCancelView,
    ConvoyDetailView,
    ConvoyImportView,
    ConvoyLaunchView,
    ConvoyListView,
)
from convoys.api.coordination import (
    BeadBlockedView,
    BeadCommentView,
    BeadReleaseView,
    EscalationCreateView,
    MessageCreateView,
    NotificationAnswerView,
    RigTurnEndView,
)
from convoys.api.me import MeView, PrimeView
from convoys.api.merge_requests import RigMergeRequestView
from convoys.api.reviews import (
    MergeRequestApproveView,
    MergeRequestRequestChangesView,
    ReviewCommentDetailView,
    ReviewCommentListView,
    ReviewCommentReplyView,
    ReviewCommentResolveView,
)

__all__ = [
    "BeadBlockedView",
    "BeadClaimView",
    "BeadCloseView",
    "BeadCommentView",
    "BeadDependencyDetailView",
    "BeadDependencyView",
    "BeadDetailView",
    "BeadListView",
    "BeadReleaseView",
    "ConvoyCancelView",
    "ConvoyDetailView",
    "ConvoyImportView",
    "ConvoyLaunchView",
    "ConvoyListView",
    "EscalationCreateView",
    "MeView",
    "MergeRequestApproveView",
    "MergeRequestRequestChangesView",
    "MessageCreateView",
    "NotificationAnswerView",
    "PrimeView",
    "ReviewCommentDetailView",
    "ReviewCommentListView",
    "ReviewCommentReplyView",
    "ReviewCommentResolveView",
    "RigMergeRequestView",
    "RigTurnEndView",
    "bead_row",
]
