"""`python -m runner.supervisor RUN_ID`: watches one agent process for its whole life.

Started detached by the scheduler (runner.operations.agent_runs_dispatch). It starts the
agent's command in the rig's worktree, copies its output to the run's log, reads usage figures
from it, notes when output was last seen, and records the exit code. A SIGTERM to the
supervisor is passed on to the agent's process group.

A usage line ends a step: what it reports is added at once (budgets are checked on it), and a
run that a budget asked to stop (`stop_by`) is stopped right after it, or at `stop_by` at the
latest, so a reached budget is overrun by at most the step each run was in.
"""

import os
import select
import signal
import sys
import time
from pathlib import Path

REPORT_EVERY_SECONDS = 5.0
# How long an agent that said it cannot work (no key, no network) has to exit by itself.
ERROR_EXIT_SECONDS = 5.0
MAX_LINE = 64 * 1024


def main(run_id: int) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gastown_site.settings")
    # its log lines say so (it inherits the worker's environment, GASTOWN_ROLE included)
    os.environ["GASTOWN_ROLE"] = "supervisor"
    import django

    django.setup()
    from django.conf import settings
    from django.db import close_old_connections
    from django.utils import timezone

    from common import process
    from common.logs import log_context_set
    from runner import budgets, presets, selectors, services
    from runner.logs import CappedLog
    from runner.models import AgentRun
    from runner.startup import StartWatch
    from runner.usage import Usage, usage_parse

    token = os.environ.pop("GASTOWN_RUN_TOKEN", "")
    run = AgentRun.objects.select_related("rig", "rig__repository", "agent").get(pk=run_id)
    if run.state != AgentRun.State.STARTING:
        return 0
    rig = run.rig
    log_context_set(run=run.id, rig=rig.id, convoy=run.convoy_id)
    env = process.agent_environment(
        run_id=run.id,
        token=token,
        rig_id=rig.id,
        agent_name=run.agent.name,
        worktree=rig.worktree_path,
        branch=rig.branch,
    )
    log = CappedLog(run.log_path, settings.GASTOWN_RUN_LOG_MAX_BYTES)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    log.note(
        f"# gastown: run {run.id} (attempt {run.attempt}) of agent {run.agent.name} in "
        f"{rig.worktree_path} at {started}\n# $ {run.command}\n"
    )
    if process.sandbox_mode() == "none":
        log.note("# gastown: no sandbox (GASTOWN_SANDBOX=none): the agent runs as the server\n")
    # Claude Code and Codex find their hooks (`gt prime --hook` after a compaction) in place.
    cli = presets.command_cli(run.command) or presets.preset_cli(run.agent.runtime)
    dirs = process.git_dirs(rig.worktree_path)
    prepared = presets.cli_prepare(
        cli, worktree=rig.worktree_path, home=env["HOME"], git_common_dir=dirs and dirs[1]
    )
    if prepared:
        log.note(f"# gastown: {prepared}\n")
    watch = StartWatch(start_seconds=settings.GASTOWN_RUN_START_SECONDS, cli=bool(cli))
    begun = time.monotonic()
    try:
        sandbox = process.worktree_sandbox(
            rig.worktree_path,
            home=env["HOME"],
            # besides the configured roots: wherever this rig's repository and worktrees live
            hidden=(rig.repository.path, str(Path(rig.worktree_path).parent)),
        )
        child = process.agent_spawn(run.command, cwd=rig.worktree_path, env=env, sandbox=sandbox)
    except OSError as exc:
        log.note(f"# gastown: cannot start: {exc}\n")
        log.close()
        services.agent_run_exited(run=run, exit_code=127, reason=f"cannot start: {exc}")
        return 1

    def forward(signum, frame) -> None:
        process.agent_signal(child.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    services.agent_run_mark_running(run=run, pid=child.pid)

    totals = reported = Usage()
    last_report = last_poll = 0.0
    ending: float | None = None  # when the agent was told to stop (failed at start, or stuck)
    error_seen: float | None = None  # when it said it cannot work (runner.startup)
    stop_by = None  # a budget is reached: the agent stops after its step, or at this time

    def stop_agent(why: str) -> None:
        nonlocal ending
        if ending is None and child.poll() is None:
            log.note(f"\n# gastown: stopping the agent: {why}\n")
            process.agent_signal(child.pid, signal.SIGTERM)
            ending = time.monotonic()

    assert child.stdout is not None
    fd = child.stdout.fileno()
    pending = b""
    while True:
        ready, _, _ = select.select([fd], [], [], 1.0)
        chunk = os.read(fd, MAX_LINE) if ready else b""
        if ready and not chunk:
            break  # every writer closed the pipe
        if chunk:
            log.write(chunk)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            if len(pending) > MAX_LINE:
                lines, pending = [*lines, pending], b""
            for line in lines:
                text = line.decode("utf-8", "replace")
                parsed = usage_parse(text)
                if parsed is not None:
                    totals = parsed
                    if parsed:
                        watch.usage_seen()
                watch.line(text)
        now = time.monotonic()
        if watch.error and error_seen is None:
            error_seen = now
        # it cannot go on (no key, no network...): a CLI that does not exit by itself soon
        # after saying so (Codex waits for the network for ever) is stopped
        erred = error_seen is not None and now - error_seen >= ERROR_EXIT_SECONDS
        if ending is None and child.poll() is None and (watch.stuck or erred):
            stop_agent(watch.stuck or watch.error)
        elif ending is not None and now - ending > settings.GASTOWN_RUN_STOP_GRACE_SECONDS:
            process.group_signal(child.pid, signal.SIGKILL)
        if totals.minus(reported):
            # a step ended: its cost counts now, and a reached budget stops the run here
            close_old_connections()
            run = budgets.agent_run_usage_add(
                run=run, usage=totals.minus(reported), source="output"
            )
            reported = totals
            if run.stop_by is not None:
                stop_agent(f"{run.kill_reason}; its step is over")
        if chunk and now - last_report >= REPORT_EVERY_SECONDS:
            close_old_connections()
            services.agent_run_output_seen(run_id=run.id)
            last_report = now
        if now - last_poll >= REPORT_EVERY_SECONDS:
            # asked to stop after its step (a budget another run reached)? at the latest then
            close_old_connections()
            stop_by = selectors.run_stop_by(run.id)
            last_poll = now
        if stop_by is not None and timezone.now() >= stop_by:
            stop_agent("a budget is reached and the grace period is over")
        if not ready and child.poll() is not None:
            break  # the command ended; a leftover background process may still hold the pipe
    if pending:
        parsed = usage_parse(pending.decode("utf-8", "replace"))
        totals = parsed if parsed is not None else totals
        if parsed:
            watch.usage_seen()
        watch.line(pending.decode("utf-8", "replace"))
    exit_code = child.wait()
    seconds = time.monotonic() - begun
    # Whatever the command left behind in its group goes with it: nothing is left running.
    process.group_signal(child.pid, signal.SIGKILL)
    close_old_connections()
    if totals.minus(reported):
        budgets.agent_run_usage_add(run=run, usage=totals.minus(reported), source="output")
    log.close(f"# gastown: {services.exit_description(exit_code)}\n")
    run.refresh_from_db()
    failed_at_start = watch.failed_at_start(exit_code, seconds)
    services.agent_run_exited(
        run=run,
        exit_code=exit_code,
        reason=f"stopped: {watch.stuck}" if watch.stuck and not failed_at_start else "",
        start_failure=failed_at_start,
        seconds=seconds,
        log_tail=process.secrets_scrub("\n".join(watch.log_tail())).splitlines(),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
