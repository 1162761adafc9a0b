"""The audit's cost on an installation with many rigs (issue 18 §1).

    .venv/bin/python bench/audit.py [--repositories 4] [--rigs 50] [--landed 25] [--rounds 5]

Builds `--repositories` repositories, each with `--rigs` rigs provisioned the product's way (a
worktree each, state events), a commit on every rig (synced), and `--landed` of them per
repository landed by the real merge queue (batches of 4); then times `audit_run()` `--rounds`
times and prints the median and worst time, the queries and the git processes of one run, and
the same for `audit_run(repair=True)` on the clean installation (which audits once). Then it
doubles nothing: run it with other sizes to see how the time grows (the queries and the git
processes per repository do not). Nothing set: SQLite and an embedded Redis in a temporary
data dir; DATABASE_URL: a throwaway database on that server."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_environment, git, median


def build(repositories: int, rigs: int, landed: int, data_dir: Path) -> dict:
    from django.db import transaction

    from rigs import merge_queue, operations, services

    root = data_dir / "repositories"
    root.mkdir(exist_ok=True)
    started = time.perf_counter()
    for r in range(repositories):
        path = root / f"app{r}"
        path.mkdir()
        git(path, "init", "-q", "-b", "main")
        (path / "README.md").write_text("# app\n")
        git(path, "add", "-A")
        git(path, "commit", "-q", "-m", "initial")
        repository = services.repository_register(name=f"app{r}", path=str(path), batch_size=4)
        made = []
        for i in range(rigs):
            with transaction.atomic():
                rig = services.rig_request(repository=repository, slug=f"r{i}")
            operations.rig_provision_run(rig.id)
            worktree = Path(rig.worktree_path)
            (worktree / f"r{i}.txt").write_text(f"rig {i}\n")
            git(worktree, "add", "-A")
            git(worktree, "commit", "-q", "-m", f"r{i}")
            operations.rig_sync_run(rig.id)
            made.append(rig)
        for rig in made[:landed]:
            rig.refresh_from_db()
            with transaction.atomic():
                services.merge_request_create(
                    repository=repository, source_branch=rig.branch, target_branch="main", rig=rig
                )
        merge_queue.merge_queue_process(repository.id, "main")
    return {"seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repositories", type=int, default=4)
    parser.add_argument("--rigs", type=int, default=50, help="rigs per repository")
    parser.add_argument("--landed", type=int, default=25, help="landed rigs per repository")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--show-queries", action="store_true", help="print each query's start")
    args = parser.parse_args()
    with bench_environment(prefix="gastown-bench-audit-") as env:
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        from audit.checks import audit_run
        from rigs.models import MergeRequest, Rig

        built = build(args.repositories, args.rigs, args.landed, env.data_dir)
        rigs = Rig.objects.count()
        merged = MergeRequest.objects.filter(state="merged").count()
        print(f"database: {env.database}")
        print(
            f"built {args.repositories} repositories, {rigs} rigs, {merged} merged requests "
            f"in {built['seconds']:.1f} s"
        )
        times = []
        for _ in range(args.rounds):
            with CaptureQueriesContext(connection) as queries:
                started = time.perf_counter()
                report = audit_run()
                times.append(time.perf_counter() - started)
            if not report.clean:
                print(report.text())
                raise SystemExit("the audit found violations on a clean installation")
        print(
            f"audit: median {median(times) * 1000:.0f} ms, worst {max(times) * 1000:.0f} ms "
            f"over {args.rounds} runs; {len(queries)} queries, {report.git_calls} git processes "
            f"({report.git_calls / args.repositories:.1f} per repository)"
        )
        if args.show_queries:
            for query in queries.captured_queries:
                print("  ", query["sql"][:110])
        started = time.perf_counter()
        repaired = audit_run(repair=True)
        print(
            f"audit --repair on it: {(time.perf_counter() - started) * 1000:.0f} ms, "
            f"clean={repaired.clean}"
        )


if __name__ == "__main__":
    main()
