"""Domain signals: how `rigs` announces what happened without knowing who listens.

All are sent inside the transaction that made the change, so a receiver's writes (events,
notifications) commit or roll back with it.
"""

from django.dispatch import Signal

# rig, old_state, new_state, reason
rig_state_changed = Signal()
# rig: provisioning progress moved (rig.progress, rig.progress_label)
rig_progress = Signal()
# rig, old_head, new_head, changed_files: the rig's branch moved (seen by a sync)
branch_updated = Signal()
# merge_request, old_state, new_state
merge_request_state_changed = Signal()
# merge_requests (list), repository, target_branch, old_tip, new_tip, changed_paths
merge_landed = Signal()
# rig, at: the rig's agent said it is alive (`POST rigs/{id}/heartbeat/`); its claims renew
rig_heartbeat = Signal()
