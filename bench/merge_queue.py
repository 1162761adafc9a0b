"""Merge queue benchmark.

    .venv/bin/python bench/merge_queue.py [--clean 50] [--gated 10] [--gate-seconds 1]

(a) `--clean` clean merge requests with no gate through the queue (`merge_queue_process`, the
    code a worker runs: claims, merge-tree, commit-tree, compare-and-swap publish, database
    records, events) against the same merges done with raw git commands (`merge-tree`,
    `commit-tree`, `update-ref`) in the same run. Goal: overhead ratio <= 3.
(b) `--gated` merge requests with a gate that sleeps `--gate-seconds`: wall time batched
    (batch size = all of them) against one by one (batch size 1). Goals: batched <= 0.3 x
    serial when all pass; <= 0.6 x serial with one bad request.

Each request's branch edits its own file, so every merge is clean. Runs on the embedded default,
or on PostgreSQL/Redis when DATABASE_URL/REDIS_URL are set (a throwaway database).
Exits 0 even when a goal is missed: it is a measurement.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_environment, git, median, table


def make_branches(repo: Path, base: str, count: int, prefix: str, bad: int | None = None):
    """`count` branches off `base`, each adding one file (branch `bad` also adds BAD)."""
    branches = []
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "GIT_INDEX_FILE": str(Path(scratch) / "index")}
        for i in range(count):
            files = {f"{prefix}/{i}.txt": f"change {i}\n"}
            if i == bad:
                files["BAD"] = "breaks the gate\n"
            subprocess.run(["git", "read-tree", base], cwd=repo, env=env, check=True)
            for path, content in files.items():
                blob = git(repo, "hash-object", "-w", "--stdin", stdin=content.encode())
                subprocess.run(
                    ["git", "update-index", "--add", "--cacheinfo", f"100644,{blob},{path}"],
                    cwd=repo,
                    env=env,
                    check=True,
                )
            tree = subprocess.run(
                ["git", "write-tree"],
                cwd=repo,
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            commit = git(repo, "commit-tree", tree, "-p", base, "-m", f"{prefix} {i}")
            branch = f"rig/{prefix}-{i}"
            git(repo, "update-ref", f"refs/heads/{branch}", commit)
            branches.append(branch)
    return branches


def raw_merges(repo: Path, base: str, branches: list[str]) -> float:
    """The physical baseline: the same merges with plain git, one after another."""
    git(repo, "update-ref", "refs/heads/main", base)
    started = time.perf_counter()
    tip = base
    for branch in branches:
        tree = git(repo, "merge-tree", "--write-tree", tip, branch).split()[0]
        commit = git(repo, "commit-tree", tree, "-p", tip, "-p", branch, "-m", f"Merge {branch}")
        git(repo, "update-ref", "refs/heads/main", commit, tip)
        tip = commit
    return time.perf_counter() - started


def queue_merges(repository, base: str, branches: list[str], batch_size: int) -> tuple[float, dict]:
    from django.db import transaction

    from rigs import merge_queue, services
    from rigs.models import MergeRequest, Rig

    repo = Path(repository.path)
    git(repo, "update-ref", "refs/heads/main", base)
    repository.batch_size = batch_size
    repository.save(update_fields=["batch_size"])
    mrs = []
    with transaction.atomic():
        for branch in branches:
            slug = branch.removeprefix("rig/")
            rig, _ = Rig.objects.get_or_create(
                repository=repository,
                slug=slug,
                defaults={
                    "branch": branch,
                    "state": Rig.State.READY,
                    "worktree_path": str(repo.parent / "none" / slug),
                },
            )
            Rig.objects.filter(pk=rig.pk).update(state=Rig.State.READY)
            rig.refresh_from_db()
            mrs.append(
                services.merge_request_create(
                    repository=repository,
                    source_branch=branch,
                    target_branch="main",
                    rig=rig,
                )
            )
    started = time.perf_counter()
    merge_queue.merge_queue_process(repository.id, "main")
    elapsed = time.perf_counter() - started
    states = {}
    for mr in MergeRequest.objects.filter(id__in=[m.id for m in mrs]):
        states[mr.state] = states.get(mr.state, 0) + 1
    return elapsed, states


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clean", type=int, default=50)
    parser.add_argument("--gated", type=int, default=10)
    parser.add_argument("--gate-seconds", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with bench_environment(prefix="gastown-bench-mq-") as env:
        from django.conf import settings

        from bench.common import generate_repository
        from rigs import services
        from rigs.models import Repository

        root = Path(settings.GASTOWN_REPOSITORY_ROOTS[0])
        root.mkdir(parents=True, exist_ok=True)
        repo = root / "app"
        generate_repository(repo, files=500, dirs=20)
        base = git(repo, "rev-parse", "main")
        repository = services.repository_register(name="app", path=str(repo))

        # (a) clean merges, no gate
        rows, ratios, serial_ratios = [], [], []
        default_batch = Repository._meta.get_field("batch_size").default
        for round_ in range(args.rounds):
            branches = make_branches(repo, base, args.clean, f"c{round_}")
            raw = raw_merges(repo, base, branches)
            queued, states = queue_merges(repository, base, branches, batch_size=default_batch)
            serial_branches = make_branches(repo, base, args.clean, f"s{round_}")
            raw_serial = raw_merges(repo, base, serial_branches)
            one_by_one, _ = queue_merges(repository, base, serial_branches, batch_size=1)
            ratios.append(queued / raw)
            serial_ratios.append(one_by_one / raw_serial)
            rows.append(
                [
                    round_ + 1,
                    f"{raw:.3f}",
                    f"{queued:.3f}",
                    f"{queued / raw:.2f}",
                    f"{one_by_one / raw_serial:.2f}",
                    states,
                ]
            )
        ratio = median(ratios)
        print(f"\n(a) {args.clean} clean merge requests, no gate ({env.database}; {env.broker})")
        print(
            table(
                [
                    "round",
                    "raw git s",
                    f"queue s (batch {default_batch})",
                    "ratio",
                    "ratio, batch 1",
                    "states",
                ],
                rows,
            )
        )
        print(
            f"overhead ratio (median, default batch size {default_batch}): {ratio:.2f}  "
            f"goal <= 3: {'met' if ratio <= 3 else 'GOAL MISSED'}; with batching off: "
            f"{median(serial_ratios):.2f}"
        )

        if args.gated < 2:
            return 0
        # (b) gated batches
        repository.gate_command = (
            f"sleep {args.gate_seconds}; test ! -e BAD || {{ echo BAD; exit 1; }}"
        )
        repository.save(update_fields=["gate_command"])
        results = {}
        for label, bad in (("all pass", None), ("one bad", args.gated * 2 // 3)):
            for mode, batch in (("serial", 1), ("batched", args.gated)):
                branches = make_branches(repo, base, args.gated, f"g-{mode}-{bad}", bad=bad)
                elapsed, states = queue_merges(repository, base, branches, batch_size=batch)
                results[(label, mode)] = (elapsed, states)
        print(f"\n(b) {args.gated} merge requests, gate sleeps {args.gate_seconds}s")
        rows = []
        verdicts = []
        for label, goal in (("all pass", 0.3), ("one bad", 0.6)):
            serial, _ = results[(label, "serial")]
            batched, b_states = results[(label, "batched")]
            share = batched / serial
            verdicts.append((label, share, goal))
            rows.append([label, f"{serial:.2f}", f"{batched:.2f}", f"{share:.2f}", goal, b_states])
        print(
            table(
                [
                    "case",
                    "one by one s",
                    "batched s",
                    "batched/serial",
                    "goal <=",
                    "batched states",
                ],
                rows,
            )
        )
        for label, share, goal in verdicts:
            print(
                f"{label}: {share:.2f} x serial, goal <= {goal}: "
                f"{'met' if share <= goal else 'GOAL MISSED'}"
            )
        print(f"\nmachine: {platform.platform()}, {platform.python_version()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
