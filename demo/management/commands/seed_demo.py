import math

from django.core.management.base import BaseCommand, CommandError, CommandParser

from convoys.models import Convoy
from demo import seed
from rigs.models import Repository


class Command(BaseCommand):
    help = (
        "Seed the demo: a sample repository and the convoy 'Build the authentication system', "
        "run by five scripted agents. Refuses when data exists, unless --force (which adds "
        "another demo beside it, with its own repository)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--pace",
            type=float,
            default=None,
            help=f"Seconds the scripted agents pause between steps: for the demo agents it "
            f"creates (default {seed.DEFAULT_PACE:g}) and, when given, the scripted ones it reuses "
            "(their queued or running runs keep the pace they started with).",
        )
        parser.add_argument(
            "--no-launch", action="store_true", help="Leave the convoy a draft (launch it later)."
        )
        parser.add_argument(
            "--force", action="store_true", help="Seed even though convoys or repositories exist."
        )

    def handle(self, *args, pace: float | None, no_launch: bool, force: bool, **options) -> None:
        if pace is not None and not (math.isfinite(pace) and pace >= 0):
            raise CommandError("--pace must be zero or more seconds.")
        if not force and not seed.demo_is_needed():
            raise CommandError(
                f"this installation already has data ({Repository.objects.count()} "
                f"repositories, {Convoy.objects.count()} convoys); the demo seeds only an empty "
                "one. Use --force to add another demo beside it."
            )
        convoy = seed.demo_seed(pace=pace, launch=not no_launch)
        path = convoy.repository.path
        self.stdout.write(
            self.style.SUCCESS(
                f"Seeded convoy '{convoy.title}' ({convoy.slug}, {convoy.state}) on {path}"
            )
        )
        for command, names in seed.demo_agents_pace().items():
            self.stdout.write(f"Agents {', '.join(names)} run `{command}`.")
        self.stdout.write(f"Watch its history: git -C {path} log --oneline --graph")
