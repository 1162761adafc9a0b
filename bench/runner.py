"""Agent launch benchmark: runs through the real runner against starting the process by hand.

    .venv/bin/python bench/runner.py [--rigs 8] [--rounds 3] [--cap 2]

Provisions ``--rigs`` rigs with a real Celery worker (with ``GASTOWN_MAX_AGENTS=--cap``), then
in each round:

- raw:     ``/bin/sh -c <command>`` started in each rig's worktree in its own session, output
           read to the end, waited for: what launching an agent costs at the very least;
- runner:  ``agent_run_request`` for one rig at a time, until the run has ``succeeded``
           (scheduler task, supervisor process with Django, the agent, exit recorded, events);
- burst:   all rigs requested at once: the cap queues them; time until the last succeeded.

The command prints a line and exits, so the figures are the launch machinery, not an agent.
Prints per-launch medians, the overhead per launch (runner - raw) and the ratio runner / raw.
Exits 0 even when numbers are poor: it is a measurement.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_environment, celery_worker_process, git, median, percentile, table

COMMAND = "echo agent-started"
TIMEOUT = 300.0


def wait_until(predicate, timeout: float = TIMEOUT, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.005)


def raw_launch(worktree: str) -> float:
    started = time.perf_counter()
    process = subprocess.Popen(
        ["/bin/sh", "-c", COMMAND],
        cwd=worktree,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    process.communicate()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rigs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cap", type=int, default=2, help="GASTOWN_MAX_AGENTS for the worker")
    parser.add_argument("--parent", help="where the throwaway data dir goes (e.g. /dev/shm)")
    args = parser.parse_args()
    os.environ["GASTOWN_MAX_AGENTS"] = str(args.cap)

    with bench_environment(prefix="gastown-bench-runner-", parent=args.parent) as env:
        from rigs import services as rig_services
        from rigs.models import Rig
        from runner import services
        from runner.models import AgentRun

        repo = env.data_dir / "repositories" / "app"
        repo.mkdir(parents=True)
        git(repo, "init", "-q", "-b", "main")
        (repo / "README.md").write_text("bench\n")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "initial")
        repository = rig_services.repository_register(name="app", path=str(repo))

        with celery_worker_process(env, concurrency=2):
            rigs = []
            for n in range(args.rigs):
                agent, _ = rig_services.agent_create(
                    name=f"bench-{n}", runtime="custom", runtime_command=COMMAND
                )
                rigs.append(
                    rig_services.rig_request(repository=repository, slug=f"r{n}", agent=agent)
                )
            ids = [r.id for r in rigs]
            wait_until(
                lambda: Rig.objects.filter(id__in=ids, state="ready").count() == len(ids),
                what="rigs to be ready",
            )
            rigs = list(Rig.objects.filter(id__in=ids).select_related("agent"))

            raw: list[float] = []
            to_running: list[float] = []
            to_done: list[float] = []
            bursts: list[float] = []
            raw_bursts: list[float] = []
            for _ in range(args.rounds):
                raw_burst = time.perf_counter()
                for rig in rigs:
                    raw.append(raw_launch(rig.worktree_path))
                raw_bursts.append(time.perf_counter() - raw_burst)
                for rig in rigs:
                    started = time.perf_counter()
                    run = services.agent_run_request(rig=rig, requested_by="bench")
                    wait_until(
                        lambda run=run: AgentRun.objects.filter(
                            pk=run.pk, state__in=["succeeded", "failed"]
                        ).exists(),
                        what=f"run {run.id}",
                    )
                    to_done.append(time.perf_counter() - started)
                    run.refresh_from_db()
                    if run.state != "succeeded":
                        raise RuntimeError(f"run {run.id} {run.state}: {run.reason}")
                    to_running.append((run.started_at - run.created_at).total_seconds())
                started = time.perf_counter()
                burst = [services.agent_run_request(rig=rig, requested_by="bench") for rig in rigs]
                burst_ids = [r.id for r in burst]
                wait_until(
                    lambda ids=burst_ids: AgentRun.objects.filter(
                        id__in=ids, state="succeeded"
                    ).count()
                    == len(ids),
                    what="the burst",
                )
                bursts.append(time.perf_counter() - started)
                peak = _peak_overlap(AgentRun.objects.filter(id__in=burst_ids))
                if peak > args.cap:
                    raise RuntimeError(f"{peak} runs overlapped; the cap is {args.cap}")

    raw_ms = median(raw) * 1000
    done_ms = median(to_done) * 1000
    print(
        f"\nAgent launches: {args.rigs} rigs x {args.rounds} rounds, cap {args.cap}, "
        f"{env.database}, {env.broker}, {platform.machine()} {os.cpu_count()} cpu"
    )
    print(
        table(
            ["measure", "median ms", "p95 ms"],
            [
                ["raw: sh -c in the worktree", raw_ms, percentile(raw, 95) * 1000],
                [
                    "runner: request -> supervisor spawned",
                    median(to_running) * 1000,
                    percentile(to_running, 95) * 1000,
                ],
                ["runner: request -> succeeded", done_ms, percentile(to_done, 95) * 1000],
                [f"raw: {args.rigs} launches in a row", median(raw_bursts) * 1000, None],
                [f"runner: {args.rigs} at once, cap {args.cap}", median(bursts) * 1000, None],
            ],
        )
    )
    print(
        f"overhead per launch: {done_ms - raw_ms:.0f} ms; "
        f"ratio runner / raw: {done_ms / raw_ms:.0f}x"
    )
    return 0


def _peak_overlap(runs) -> int:
    """The most runs that were alive at the same instant."""
    edges = []
    for run in runs:
        edges += [(run.started_at, 1), (run.finished_at, -1)]
    peak = alive = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):
        alive += step
        peak = max(peak, alive)
    return peak


if __name__ == "__main__":
    sys.exit(main())
