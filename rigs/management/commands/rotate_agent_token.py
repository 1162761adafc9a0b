from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from rigs.models import Agent
from rigs.services import agent_rotate_token


class Command(BaseCommand):
    help = (
        "Give an agent a new token (the old one stops working) and print only the new one; "
        "optionally expiring."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("name")
        parser.add_argument("--expires-in-days", type=int, default=None)

    def handle(self, *args, name: str, expires_in_days: int | None, **options) -> None:
        agent = Agent.objects.filter(name=name).first()
        if agent is None:
            raise CommandError(f"no agent '{name}'.")
        if expires_in_days is not None and expires_in_days <= 0:
            raise CommandError("--expires-in-days must be positive.")
        expires = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
        self.stdout.write(agent_rotate_token(agent=agent, expires_at=expires))
