"""Domain signals of notifications, sent inside the transaction that made the change."""

from django.dispatch import Signal

# notifications: notifications just stored (a repeat of an unacknowledged one is not sent)
notifications_created = Signal()
