"""`Authorization: Token gtr_…`: the token the runner hands a launched agent (GT_TOKEN).

It acts as the run's agent (the same `AgentUser` as an agent token) and only while the run is
starting or running, so a log or environment that leaks it is worth nothing afterwards, and the
agent's own long-lived token is never handed to a process.
"""

from rest_framework import authentication, exceptions

from rigs.auth import AgentUser
from rigs.models import hash_token
from runner.models import AgentRun


def run_for_token(raw: str) -> AgentRun | None:
    run = (
        AgentRun.objects.select_related("agent")
        .filter(token_hash=hash_token(raw), state__in=AgentRun.PROCESS_STATES)
        .first()
    )
    if run is None or not run.agent.is_active:
        return None
    return run


class RunTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Token"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if len(header) != 2 or header[0].lower() != b"token":
            return None
        if not header[1].startswith(AgentRun.TOKEN_PREFIX.encode()):
            return None  # an agent's or a person's token: rigs.auth decides
        run = run_for_token(header[1].decode("ascii", "replace"))
        if run is None:
            raise exceptions.AuthenticationFailed("Run token is invalid or its run has ended.")
        request._gastown_run = run
        return AgentUser(run.agent), run.agent

    def authenticate_header(self, request) -> str:
        return self.keyword
