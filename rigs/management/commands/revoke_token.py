from django.core.management.base import BaseCommand, CommandError

from rigs.models import Agent, ApiToken, hash_token
from rigs.services import agent_revoke_token, api_tokens_revoke


class Command(BaseCommand):
    help = (
        "Revoke a token: an agent's (by agent name), a personal token (by the token itself or "
        "its shown prefix, gtp_…), or all of a user's personal tokens (--user)."
    )

    def add_arguments(self, parser) -> None:
        group = parser.add_mutually_exclusive_group(required=True)
        group.add_argument("--agent", help="agent name")
        group.add_argument("--token", help="a personal token, or its first 12 characters")
        group.add_argument("--user", help="every personal token of this username")

    def handle(self, *args, agent: str | None, token: str | None, user: str | None, **options):
        if agent:
            found = Agent.objects.filter(name=agent).first()
            if found is None:
                raise CommandError(f"no agent '{agent}'.")
            agent_revoke_token(agent=found)
            self.stdout.write(f"revoked the token of agent {agent}")
            return
        live = ApiToken.objects.filter(revoked_at__isnull=True)
        if user:
            tokens = live.filter(user__username=user)
        elif token and len(token) > 12:
            tokens = live.filter(token_hash=hash_token(token))
        else:
            tokens = live.filter(token_prefix=token)
        count = api_tokens_revoke(tokens=tokens)
        if not count:
            raise CommandError("no matching live personal token.")
        self.stdout.write(f"revoked {count} personal token(s)")
