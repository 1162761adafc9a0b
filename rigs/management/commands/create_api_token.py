from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from rigs.services import api_token_create


class Command(BaseCommand):
    help = (
        "Create a personal API token for a person (for scripts) and print only the token "
        "(shown once; only its hash is kept). It acts with the user's roles."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="what the token is for")
        parser.add_argument("--expires-in-days", type=int, default=None)

    def handle(self, *args, username: str, name: str, expires_in_days: int | None, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user '{username}'.")
        if not user.is_active:
            raise CommandError(f"user '{username}' is deactivated.")
        if expires_in_days is not None and expires_in_days <= 0:
            raise CommandError("--expires-in-days must be positive.")
        expires = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
        _token, raw = api_token_create(user=user, name=name, expires_at=expires)
        self.stdout.write(raw)
