"""OpenAPI description of the run token scheme (imported by RunnerConfig.ready)."""

from rigs.auth import TokenScheme


class RunTokenScheme(TokenScheme):
    """The same `Authorization: Token …` header as agents' tokens."""

    target_class = "runner.auth.RunTokenAuthentication"
