from django.core.management.base import BaseCommand

from rigs.services import admin_login_ensure


class Command(BaseCommand):
    help = "Create an admin login when there is none, and print its password once."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--username", default="admin")

    def handle(self, *args, username: str, **options) -> None:
        name, password = admin_login_ensure(username=username)
        if password is None:
            return
        self.stdout.write(
            self.style.WARNING(
                f"Created admin login (shown once): username '{name}' password '{password}'"
            )
        )
