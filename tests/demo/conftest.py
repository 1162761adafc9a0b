"""The demo's end-to-end test runs the convoy with the runner's real worker (and its settings)."""

from tests.runner.conftest import runner_env, runner_worker  # noqa: F401
