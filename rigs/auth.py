"""Who is calling: agents by token (`Authorization: Token <key>`), people by session."""

from dataclasses import dataclass

from django.utils import timezone
from rest_framework import authentication, exceptions

from rigs.models import Agent, hash_token


@dataclass
class AgentUser:
    """Stands in for `request.user` when an agent calls; `request.auth` is the Agent."""

    agent: Agent
    is_authenticated: bool = True
    is_anonymous: bool = False
    is_staff: bool = False
    is_superuser: bool = False

    @property
    def username(self) -> str:
        return f"agent:{self.agent.name}"

    @property
    def pk(self) -> str:  # used by DRF's throttling as the cache key
        return self.username

    def get_username(self) -> str:
        return self.username

    def has_perm(self, perm: str, obj=None) -> bool:
        return False

    def __str__(self) -> str:
        return self.username


def agent_for_token(raw: str) -> Agent | None:
    agent = Agent.objects.filter(token_hash=hash_token(raw)).first() if raw else None
    if agent is None or not agent.token_valid(timezone.now()):
        return None
    return agent


class AgentTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Token"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Token header must be 'Token <key>'.")
        try:
            raw = header[1].decode()
        except UnicodeDecodeError as exc:
            raise exceptions.AuthenticationFailed("Token contains invalid characters.") from exc
        agent = agent_for_token(raw)
        if agent is None:
            raise exceptions.AuthenticationFailed("Invalid, revoked or expired token.")
        return AgentUser(agent), agent

    def authenticate_header(self, request) -> str:
        return self.keyword


def calling_agent(request) -> Agent | None:
    return request.auth if isinstance(request.auth, Agent) else None
