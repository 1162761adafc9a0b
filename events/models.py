from django.db import models


class Event(models.Model):
    """One row of the append-only event log: drives the live board and replays missed updates.

    It names what it is about by id only (the log sits below every app and imports none); the
    table is the one the convoys app created (`convoys_event`), kept as it was."""

    kind = models.CharField(max_length=60)
    payload = models.JSONField(default=dict, blank=True)
    repository_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    convoy_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    rig_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        db_table = "convoys_event"
        ordering = ["id"]
        indexes = [
            models.Index(fields=["convoy_id", "id"], name="event_convoy"),
            models.Index(fields=["rig_id", "id"], name="event_rig"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.kind}"

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None:
            raise ValueError("Events are append-only: an event cannot be changed.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("Events are append-only: an event cannot be deleted.")
