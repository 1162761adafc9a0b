from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from rigs.models import Agent
from rigs.services import agent_create


class Command(BaseCommand):
    help = "Create an agent and print only its API token (shown once)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name")
        parser.add_argument(
            "--runtime",
            choices=Agent.Runtime.values,
            default=Agent.Runtime.CUSTOM,
            help="a preset command (scripted, claude, codex) or custom",
        )
        parser.add_argument(
            "--runtime-command",
            default="",
            help="what Gas Town runs in the agent's rig (overrides the runtime's preset)",
        )

    def handle(self, *args, name: str, runtime: str, runtime_command: str, **options) -> None:
        try:
            _, token = agent_create(name=name, runtime=runtime, runtime_command=runtime_command)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self.stdout.write(token)
