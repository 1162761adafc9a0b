"""Thin Celery tasks for convoys and beads. A task reaches its service with an import inside the
function, so the dependency runs one way (services never import this module at load time)."""

from celery import shared_task


@shared_task
def bead_leases_expire() -> list[str]:
    """Periodic (beat): claims whose lease lapsed go back to open (convoys.services.leases)."""
    from convoys.services.leases import bead_leases_expire as expire

    return [bead.short_id for bead in expire()]
