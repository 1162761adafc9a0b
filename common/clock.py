"""The database's clock, for the periodic tasks that judge whether time ran out.

A lease lapsed, a rig went silent, an agent stopped answering: each compares a stored time
with "now". With the worker's own clock, a worker whose clock jumps an hour ahead (a VM
resumed, a bad NTP step) would see every live lease lapsed, every rig silent and every agent
dead, and act on it. The database's clock is the one every process shares, so the judges ask
it (one small query per sweep). Writers keep their own clock: the times they store are close
to the database's while clocks are synchronized, and a writer whose clock jumps only gives its
own lease more (or less) time."""

from datetime import UTC, datetime

from django.db import connection
from django.utils import timezone


def db_now() -> datetime:
    """The database's current time (aware, UTC)."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")
            text = cursor.fetchone()[0]
            return datetime.fromisoformat(text).replace(tzinfo=UTC)
        cursor.execute("SELECT CURRENT_TIMESTAMP")
        value = cursor.fetchone()[0]
    return value if timezone.is_aware(value) else value.replace(tzinfo=UTC)
