"""The causes a rig's notice can be about (`Notification.topic`): a rig has at most one open
notice per topic, updated in place as the cause changes and resolved by what answers it."""

BASE = "base"  # its target moved: how far behind, and whether a conflict is forecast
INTERFACE = "interface"  # what it watches changed, accumulated until it acts
DEPENDENCIES = "dependencies"  # a dependency manifest changed
MERGE = "merge"  # its last merge request conflicted or failed its gate
OVERLAP_PREFIX = "overlap:"  # overlap:<other rig id>: both edit the same files


def overlap(other_rig_id: int) -> str:
    return f"{OVERLAP_PREFIX}{other_rig_id}"


# Answered when the rig lands its work: what it was asked to act on is in what landed.
ANSWERED_BY_LANDING = (BASE, INTERFACE, DEPENDENCIES, MERGE)
