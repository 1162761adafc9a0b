"""`Token gtr_…`: the token the runner hands a launched agent (GT_TOKEN).

It acts as the run's agent (the same `AgentUser` as an agent token, for the API and for
websockets) and only while the run is starting or running, so a log or environment that leaks
it is worth nothing afterwards, and the agent's own long-lived token is never handed to a
process. Registered with `rigs.auth.TOKEN_KINDS` by RunnerConfig.ready.
"""

from rigs.auth import AgentUser
from rigs.models import Agent, hash_token
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


def run_principal(raw: str) -> tuple[AgentUser, Agent] | None:
    run = run_for_token(raw)
    return (AgentUser(run.agent), run.agent) if run else None
