from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from rigs.services import agent_create


class Command(BaseCommand):
    help = "Create an agent and print only its API token (shown once)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name")
        parser.add_argument("--runtime-command", default="")

    def handle(self, *args, name: str, runtime_command: str, **options) -> None:
        try:
            _, token = agent_create(name=name, runtime_command=runtime_command)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self.stdout.write(token)
