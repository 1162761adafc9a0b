"""The runner's fixtures (a worker with beat, a web server, rigs with agents), for the agent row."""

from tests.runner.conftest import ready_rig, runner_env, runner_worker  # noqa: F401
