"""Domain signals of convoys, sent inside the transaction that made the change."""

from django.dispatch import Signal

# leg, rig: a convoy handed a leg to its rig (wave 1 at launch, later legs when unblocked)
leg_dispatched = Signal()
# convoy: a convoy was cancelled (its legs are cancelled; work for it should stop)
convoy_cancelled = Signal()
