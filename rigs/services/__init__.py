"""Writes for repositories, agents, rigs and merge requests: one transaction each. A package:
`base` (shared helpers and refusals), `repositories`, `agents`, `rigs`, `merge_requests`; every
service is re-exported here, so callers use `from rigs import services`.


Services never run git. Those that need git work record intent and enqueue a task after commit;
the task (rigs.operations) does the git work and records the result through these services.

Each service appends its own events (`rig.*`, `merge_request.*`, `repository.*`, `agent.*`) in
its transaction, with the repository and rig they are about (rigs knows nothing of convoys; a
convoy's page listens to its legs' rig groups). The domain signals (rigs.signals) are still sent
for the apps that react to a change (convoys, runner).

Imports go one way: this module imports `rigs.tasks` at the top and enqueues after commit;
tasks import services and operations inside their bodies.
"""

from rigs.services.agents import (
    AGENT_EDITABLE,
    admin_login_ensure,
    agent_create,
    agent_revoke_token,
    agent_rotate_token,
    agent_update,
    api_token_create,
    api_tokens_revoke,
)
from rigs.services.base import (
    TeardownRefused,
)
from rigs.services.merge_requests import (
    MergeInProgress,
    ReviewRefused,
    approvals_of,
    merge_request_cancel,
    merge_request_create,
    merge_request_finish,
    merge_request_prioritize,
    merge_request_review_record,
    merge_request_transition,
    merge_requests_landed,
    merge_requests_publishing,
)
from rigs.services.repositories import (
    REPOSITORY_EDITABLE,
    repository_location_validate,
    repository_name_from_path,
    repository_register,
    repository_update,
)
from rigs.services.rigs import (
    RIG_EDITABLE,
    RIG_SETTINGS,
    lost_work_message,
    rig_archive_record,
    rig_heartbeat,
    rig_progress_set,
    rig_request,
    rig_retry,
    rig_sync_record,
    rig_sync_request,
    rig_teardown_refused_record,
    rig_teardown_request,
    rig_transition,
    rig_update,
    rigs_mark_stalled,
)

__all__ = [
    "AGENT_EDITABLE",
    "REPOSITORY_EDITABLE",
    "RIG_EDITABLE",
    "RIG_SETTINGS",
    "MergeInProgress",
    "ReviewRefused",
    "TeardownRefused",
    "admin_login_ensure",
    "agent_create",
    "agent_revoke_token",
    "agent_rotate_token",
    "agent_update",
    "api_token_create",
    "api_tokens_revoke",
    "approvals_of",
    "lost_work_message",
    "merge_request_cancel",
    "merge_request_create",
    "merge_request_finish",
    "merge_request_prioritize",
    "merge_request_review_record",
    "merge_request_transition",
    "merge_requests_landed",
    "merge_requests_publishing",
    "repository_location_validate",
    "repository_name_from_path",
    "repository_register",
    "repository_update",
    "rig_archive_record",
    "rig_heartbeat",
    "rig_progress_set",
    "rig_request",
    "rig_retry",
    "rig_sync_record",
    "rig_sync_request",
    "rig_teardown_refused_record",
    "rig_teardown_request",
    "rig_transition",
    "rig_update",
    "rigs_mark_stalled",
]
