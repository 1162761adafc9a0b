"""What every board page may need to know about the runner."""

from django.conf import settings


def sandbox(request) -> dict[str, bool]:
    """`gastown_sandbox_off`: agents run without the bubblewrap sandbox (GASTOWN_SANDBOX=none);
    the board shows a warning."""
    return {"gastown_sandbox_off": settings.GASTOWN_SANDBOX == "none"}
