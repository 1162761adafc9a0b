"""OpenAPI description of the run token scheme (imported by RunnerConfig.ready)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class RunTokenScheme(OpenApiAuthenticationExtension):
    target_class = "runner.auth.RunTokenAuthentication"
    name = "runToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Token gtr_…`: the token the runner gives an agent it launches "
            "(GT_TOKEN). It acts as that agent while the run is live.",
        }
