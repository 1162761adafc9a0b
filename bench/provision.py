"""Provisioning benchmark: rigs through the real task path against raw `git worktree add`.

    .venv/bin/python bench/provision.py [--rigs 20] [--files 5000] [--rounds 3]

Generates a repository (``--files`` small text files in ``--dirs`` directories, one commit),
registers it, starts a real Celery worker process and, in each round (the order alternates):

- raw full:    ``git worktree add -b <branch> <path> main`` for N rigs, sequential;
- task full:   ``rig_request`` for N rigs (N transactions, as N API calls would be) until all
               N are ``ready`` in the database (Celery dispatch, git, DB and event writes);
- task sparse: the same with ``sparse=True, scope=[<2% of the directories>/**]``;
- raw sparse:  what the product runs for a sparse rig, by hand (``worktree add --no-checkout``,
               ``sparse-checkout set --cone --sparse-index``, ``checkout``).

Between measurements (untimed) the worktrees are unregistered and moved aside and the
branches deleted. Prints the overhead ratio (task full / raw full, goal <= 1.25) and the
sparse speed-up (task full / task sparse, goal >= 5), each the median of the per-round
ratios (the pairs run back to back), then a profile of request + provision in this process
(every git command, query and broadcast timed) to show where the overhead goes. Exits 0 even
when a goal is missed: it is a measurement.

Nothing set: a fresh temporary data dir, SQLite and an embedded Redis. With DATABASE_URL a
throwaway database ``gastown_bench_<pid>`` is created on that server and dropped at the end;
with REDIS_URL that Redis is used with a private queue (events are still broadcast to the
channel groups there, so do not point it at a Redis a live board uses). ``--parent /dev/shm``
puts the data dir in memory, which takes the disk out of the measurement.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import platform
import pstats
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    bench_environment,
    celery_worker_process,
    generate_repository,
    git,
    median,
    patch_git,
    percentile,
    table,
    timed,
)

RATIO_GOAL = 1.25
SPEEDUP_GOAL = 5.0
WAIT_TIMEOUT = 900.0
POLL_SECONDS = 0.01


@dataclass
class Run:
    kind: str
    round: int
    seconds: float
    per_rig: list[float] = field(default_factory=list)
    phases: dict[str, list[float]] = field(default_factory=dict)


# --- raw git -------------------------------------------------------------------------------------


def raw_provision(repo: Path, root: Path, tag: str, n: int, sparse: list[str] | None) -> Run:
    """N sequential raw provisions: the same git work the product does, nothing else."""
    per_rig = []
    with timed() as total:
        for i in range(n):
            path, branch = root / f"{tag}-{i:03d}", f"bench/{tag}-{i:03d}"
            with timed() as one:
                if sparse is None:
                    git(repo, "worktree", "add", "-b", branch, str(path), "main")
                else:
                    git(repo, "worktree", "add", "--no-checkout", "-b", branch, str(path), "main")
                    # whole directories: cone mode with a sparse index (rigs.git does the same)
                    dirs = "".join(p.removesuffix("/**") + "\n" for p in sparse).encode()
                    git(path, "sparse-checkout", "set", "--cone", "--sparse-index", "--stdin",
                        stdin=dirs)  # fmt: skip
                    git(path, "checkout", "--quiet")
            per_rig.append(one.seconds)
    return Run(f"raw {'sparse' if sparse else 'full'}", 0, total.seconds, per_rig)


def set_aside(repo: Path, paths: list[Path], branches: list[str], graveyard: Path) -> None:
    """Untimed, between measurements: unregister the worktrees and delete their branches,
    so runs never see each other's worktrees.

    The directories are moved aside (deleted with the data dir at the end), not deleted:
    on ext4 without a journal, a new inode skips every free inode deleted in the last
    60-360 s (`recently_deleted()`), so deleting 100,000 files makes the next measurement's
    checkouts several times slower."""
    graveyard.mkdir(parents=True, exist_ok=True)
    for path in paths:
        if path.exists():
            path.rename(graveyard / f"{path.parent.name}-{path.name}")
    git(repo, "worktree", "prune")
    existing = set(git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/").split())
    if doomed := [b for b in branches if b in existing]:
        git(repo, "branch", "-D", *doomed)
    os.sync()  # write the new files out now, not during the next measurement


def pack_size(repo: Path) -> str:
    stats = dict(line.split(": ", 1) for line in git(repo, "count-objects", "-vH").splitlines())
    return stats.get("size-pack", "?")


def fs_probe(directory: Path, count: int = 500) -> float:
    """Microseconds to create one empty file: shows when the filesystem, not Gas Town, made a
    round slow (the files are kept until the end, for the reason in set_aside)."""
    directory.mkdir(parents=True)
    with timed() as t:
        for i in range(count):
            (directory / f"f{i}").touch()
    return t.seconds / count * 1e6


# --- the task path -------------------------------------------------------------------------------


def task_provision(repository, tag: str, n: int, scope: list[str] | None) -> tuple[Run, list]:
    """rig_request for N rigs (one transaction each), then poll until all are ready."""
    from rigs import services
    from rigs.models import Rig

    ids = []
    with timed() as total:
        for i in range(n):
            rig = services.rig_request(
                repository=repository, slug=f"{tag}-{i:03d}", scope=scope or [],
                sparse=scope is not None,
            )  # fmt: skip
            ids.append(rig.id)
        while True:
            states = Counter(Rig.objects.filter(pk__in=ids).values_list("state", flat=True))
            if states[Rig.State.READY] == n:
                break
            if states[Rig.State.FAILED]:
                failed = Rig.objects.filter(pk__in=ids, state=Rig.State.FAILED).first()
                raise RuntimeError(f"rig {failed.slug} failed: {failed.failure_reason}")
            if total.started + WAIT_TIMEOUT < time.perf_counter():
                raise RuntimeError(f"rigs not ready after {WAIT_TIMEOUT}s: {dict(states)}")
            time.sleep(POLL_SECONDS)
    rigs = list(Rig.objects.filter(pk__in=ids).order_by("id"))
    kind = f"task {'sparse' if scope else 'full'}"
    run = Run(kind, 0, total.seconds, [r.provision_seconds for r in rigs], worker_phases(ids))
    return run, rigs


def worker_phases(ids: list[int]) -> dict[str, list[float]]:
    """Per-rig phases from the event log (each event is stamped when its row is written)."""
    from events.models import Event

    marks: dict[int, dict[str, float]] = defaultdict(dict)
    for event in Event.objects.filter(rig_id__in=ids, kind__in=["rig.state", "rig.progress"]):
        payload = event.payload
        key = payload.get("to") or f"progress {payload.get('progress')}"
        marks[event.rig_id].setdefault(key, event.created_at.timestamp())
    spans = {
        "queued: requested -> provisioning": ("requested", "provisioning"),
        "start: provisioning -> progress 10": ("provisioning", "progress 10"),
        "checkout, lock wait included: 10 -> 60": ("progress 10", "progress 60"),
        "finish: progress 60 -> ready": ("progress 60", "ready"),
    }
    phases: dict[str, list[float]] = {name: [] for name in spans}
    for m in marks.values():
        for name, (a, b) in spans.items():
            if a in m and b in m:
                phases[name].append(m[b] - m[a])
    first = min(marks.values(), key=lambda m: m.get("requested", float("inf")))
    if "requested" in first and "provisioning" in first:  # nothing queued ahead of it
        phases["dispatch: first rig, requested -> provisioning"] = [
            first["provisioning"] - first["requested"]
        ]
    return phases


# --- profile of one provision, in this process ----------------------------------------------


@dataclass
class Profile:
    rigs: int
    request: list[float] = field(default_factory=list)  # rig_request (web side)
    provision: list[float] = field(default_factory=list)  # rig_provision_run (worker side)
    git: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    db: list[float] = field(default_factory=list)
    db_queries: int = 0
    broadcast: list[float] = field(default_factory=list)
    broadcast_groups: int = 0
    locked: list[float] = field(default_factory=list)  # repository lock held
    locked_git: float = 0.0  # git time inside the lock, all rigs
    stats: str = ""


def _git_key(args: list[str]) -> str:
    if args and args[0] in ("worktree", "sparse-checkout") and len(args) > 1:
        return f"{args[0]} {args[1]}"
    if args and args[0] == "rev-parse" and "--end-of-options" not in args:
        return f"rev-parse {args[1]}"
    return args[0] if args else "?"


def profile_provision(repository, tag: str, n: int, scope: list[str] | None, use_cprofile: bool):
    """Run request + provision for N rigs sequentially in this process (no Celery), timing
    every git command, every query and every broadcast. Worktrees are left for the caller."""
    from django.db import connection

    from events import services as events
    from rigs import git as rigs_git
    from rigs import operations, services
    from rigs.git.run import _execute as git_execute

    profile = Profile(rigs=n)
    # The broadcast function: `events_broadcast(events)` (batched per transaction) or, in
    # older code, `event_broadcast(event)`; either is timed per call.
    broadcast_name = next(n for n in ("events_broadcast", "event_broadcast") if hasattr(events, n))
    real_execute, real_broadcast = git_execute, getattr(events, broadcast_name)
    real_lock = rigs_git.repository_lock
    real_group_send = None
    in_lock = False

    def execute(cwd, args, *rest, **kwargs):
        with timed() as t:
            result = real_execute(cwd, args, *rest, **kwargs)
        profile.git[_git_key([str(a) for a in args])].append(t.seconds)
        if in_lock:
            profile.locked_git += t.seconds
        return result

    @contextmanager
    def lock(*args, **kwargs):
        nonlocal in_lock
        with real_lock(*args, **kwargs) as path:
            outer, in_lock = in_lock, True
            with timed() as t:
                yield path
            in_lock = outer
        if not outer:
            profile.locked.append(t.seconds)

    def broadcast(*args, **kwargs):
        with timed() as t:
            real_broadcast(*args, **kwargs)
        profile.broadcast.append(t.seconds)

    def query_timer(execute_query, sql, params, many, context):
        with timed() as t:
            result = execute_query(sql, params, many, context)
        profile.db.append(t.seconds)
        return result

    async def count_groups(*args, **kwargs):
        profile.broadcast_groups += 1
        return await real_group_send(*args, **kwargs)

    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    real_group_send = layer.group_send
    profiler = cProfile.Profile() if use_cprofile else None
    rigs = []
    with (
        # (the rigs module of the services package is where rig_request looks it up)
        mock.patch("rigs.services.rigs._enqueue_provision", lambda rig: None),
        patch_git("_execute", execute),
        patch_git("repository_lock", lock),
        mock.patch.object(events, broadcast_name, broadcast),
        mock.patch.object(layer, "group_send", count_groups),
        connection.execute_wrapper(query_timer),
    ):
        for i in range(n):
            with timed() as t:
                rig = services.rig_request(
                    repository=repository, slug=f"{tag}-{i:03d}", scope=scope or [],
                    sparse=scope is not None,
                )  # fmt: skip
            profile.request.append(t.seconds)
            if profiler:
                profiler.enable()
            with timed() as t:
                operations.rig_provision_run(rig.id)
            if profiler:
                profiler.disable()
            profile.provision.append(t.seconds)
            rig.refresh_from_db()
            if rig.state != "ready":
                raise RuntimeError(f"profiled rig {rig.slug} is {rig.state}: {rig.failure_reason}")
            rigs.append(rig)
    profile.db_queries = len(profile.db)
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
        profile.stats = out.getvalue()
    return profile, rigs


def spawn_cost(repo: Path, count: int = 40) -> tuple[float, float, float]:
    """Median seconds of one trivial git command: raw subprocess, through rigs.git.run, and
    of rigs.git.validate_ref_name (a `git check-ref-format` spawn)."""
    from rigs import git as rigs_git

    raw, wrapped, check = [], [], []
    for _ in range(count):
        with timed() as t:
            subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, check=True)
        raw.append(t.seconds)
        with timed() as t:
            rigs_git.run(repo, "rev-parse", "HEAD")
        wrapped.append(t.seconds)
        with timed() as t:
            rigs_git.validate_ref_name("rig/bench-x")
        check.append(t.seconds)
    return median(raw), median(wrapped), median(check)


# --- main ----------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rigs", type=int, default=20, help="rigs per measurement (20)")
    parser.add_argument("--files", type=int, default=5000, help="files in the repository (5000)")
    parser.add_argument("--dirs", type=int, default=100, help="directories (100)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; medians are reported (3)")
    parser.add_argument("--sparse-percent", type=float, default=2.0, help="scope, %% of dirs (2)")
    parser.add_argument(
        "--concurrency", type=int, default=os.cpu_count() or 2,
        help="worker processes (default: CPU count, as `make run`)",
    )  # fmt: skip
    parser.add_argument("--profile-rigs", type=int, default=5, help="rigs in the profile (5)")
    parser.add_argument("--cprofile", action="store_true", help="print cProfile's top 25 too")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    parser.add_argument(
        "--parent", help="make the temporary data dir here (default: the system temp dir; "
        "e.g. /dev/shm to take the disk out of the measurement)",
    )  # fmt: skip
    args = parser.parse_args()
    # Stopped from outside: still run the cleanups (worker, Redis, database, temp dir).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    with bench_environment(keep=args.keep, parent=args.parent) as env:
        benchmark(args, env)
    return 0


def benchmark(args: argparse.Namespace, env) -> None:
    from django.conf import settings

    from rigs import services

    n = args.rigs
    repo = Path(settings.GASTOWN_REPOSITORY_ROOTS[0]) / "bench"
    with timed() as gen:
        leaves = generate_repository(repo, files=args.files, dirs=args.dirs)
    wanted = max(1, round(len(leaves) * args.sparse_percent / 100))
    scope_dirs = leaves[:: max(1, len(leaves) // wanted)][:wanted]
    scope = [f"{d}/**" for d in scope_dirs]
    tracked = git(repo, "ls-files").splitlines()
    in_scope = sum(1 for p in tracked if any(p.startswith(d + "/") for d in scope_dirs))
    repository = services.repository_register(name="bench", path=str(repo))
    raw_root, aside = env.data_dir / "raw-worktrees", env.data_dir / "set-aside"
    print(f"Gas Town provisioning benchmark: {n} rigs per measurement, {args.rounds} rounds")
    print(f"  machine: {os.cpu_count()} cores, {platform.platform()}, {git(repo, 'version')}")
    print(f"  data dir: {env.data_dir}")
    print(f"  database: {env.database}; broker: {env.broker}")
    print(f"  worker: `celery worker` process, prefork, concurrency {args.concurrency}")
    print(
        f"  repository: {len(tracked)} files in {len(leaves)} directories, one commit, "
        f"{pack_size(repo)} packed "
        f"(generated in {gen.seconds:.1f}s)"
    )
    print(f"  sparse scope: {', '.join(scope)} ({in_scope} files, {in_scope / len(tracked):.1%})")
    print(flush=True)

    def measure(kind: str, tag: str, round_no: int, count: int = n) -> Run:
        sparse = scope if kind.endswith("sparse") else None
        if kind.startswith("raw"):
            run = raw_provision(repo, raw_root, tag, count, sparse)
            paths = [raw_root / f"{tag}-{i:03d}" for i in range(count)]
            branches = [f"bench/{tag}-{i:03d}" for i in range(count)]
        else:
            run, rigs = task_provision(repository, tag, count, sparse)
            paths = [Path(r.worktree_path) for r in rigs]
            branches = [r.branch for r in rigs]
        run.round = round_no
        set_aside(repo, paths, branches, aside)
        return run

    order = ["raw full", "task full", "task sparse", "raw sparse"]
    runs: list[Run] = []
    probes: list[float] = []
    with celery_worker_process(env, args.concurrency):
        # Warm-up (untimed): page cache, every worker process's imports and connections.
        measure("raw full", "warm-raw", 0, 2)
        measure("task full", "warm", 0, 2 * args.concurrency)
        for r in range(1, args.rounds + 1):
            probes.append(fs_probe(env.data_dir / "probes" / str(r)))
            print(f"  round {r}: file creation probe {probes[-1]:.0f} us/file", flush=True)
            for kind in order if r % 2 else order[::-1]:
                run = measure(kind, f"r{r}-{kind.replace(' ', '-')}", r)
                runs.append(run)
                print(
                    f"  round {r}: {kind:<11} {run.seconds:7.3f} s "
                    f"({run.seconds / n * 1000:6.1f} ms/rig)",
                    flush=True,
                )
    summarize(args, runs, order, probes)

    print()
    m = args.profile_rigs
    print(f"Profile: rig_request + rig_provision_run of {m} rigs, sequential, in this process")
    print("(no Celery; every git command, query and broadcast timed):")
    med_raw = {k: median([r.seconds for r in runs if r.kind == k]) / n for k in order}
    for label, sparse in (("full", None), ("sparse", scope)):
        profile, rigs = profile_provision(
            repository, f"prof-{label}", m, sparse, args.cprofile and sparse is None
        )
        set_aside(repo, [Path(r.worktree_path) for r in rigs], [r.branch for r in rigs], aside)
        print_profile(profile, med_raw[f"raw {label}"], label)
        if profile.stats:
            print(profile.stats)
    raw_spawn, wrapped_spawn, check_spawn = spawn_cost(repo)
    print()
    print(
        f"one trivial git command: {raw_spawn * 1000:.2f} ms by subprocess, "
        f"{wrapped_spawn * 1000:.2f} ms through rigs.git.run; "
        f"validate_ref_name(): {check_spawn * 1000:.2f} ms (it spawns `git check-ref-format`)"
    )


def summarize(args: argparse.Namespace, runs: list[Run], order: list[str], probes) -> None:
    n = args.rigs
    by_kind = {k: [r for r in runs if r.kind == k] for k in order}
    med = {k: median([r.seconds for r in v]) for k, v in by_kind.items()}
    rows = []
    for kind in order:
        per_rig = [x for r in by_kind[kind] for x in r.per_rig]
        rows.append(
            [
                kind,
                *[r.seconds for r in by_kind[kind]],
                med[kind],
                med[kind] / n * 1000,
                percentile(per_rig, 50) * 1000,
                percentile(per_rig, 95) * 1000,
            ]
        )
    rows.append(["file probe (us/file)", *probes, median(probes), "", "", ""])
    headers = ["measurement", *[f"round {i} (s)" for i in range(1, args.rounds + 1)]]
    headers += ["median (s)", "ms/rig (wall)", "p50 rig (ms)", "p95 rig (ms)"]
    print()
    print(table(headers, rows))
    print(
        "p50/p95 rig: raw = one rig's git commands; task = the worker's provision_seconds "
        "(waits for the repository lock included)"
    )

    def paired(a: str, b: str) -> list[float]:
        return [x.seconds / y.seconds for x, y in zip(by_kind[a], by_kind[b], strict=True)]

    # Each round measures the pairs back to back: per-round ratios cancel slow drift in the
    # machine's speed (other work on the two cores, the filesystem), so their median leads.
    ratios, speedups = paired("task full", "raw full"), paired("task full", "task sparse")
    raw_speedups = paired("raw full", "raw sparse")
    ratio, speedup = median(ratios), median(speedups)
    ratio_ok, speedup_ok = ratio <= RATIO_GOAL, speedup >= SPEEDUP_GOAL

    def rounds(values: list[float]) -> str:
        return ", ".join(f"{v:.2f}" for v in values)

    print()
    print(
        f"overhead ratio, task full / raw full: {ratio:.2f} (goal <= {RATIO_GOAL}): "
        f"{'PASS' if ratio_ok else 'GOAL MISSED'}"
    )
    print(
        f"    median of the rounds ({rounds(ratios)}); ratio of the medians "
        f"{med['task full'] / med['raw full']:.2f}; "
        f"{(med['task full'] - med['raw full']) / n * 1000:+.0f} ms/rig"
    )
    print(
        f"sparse speed-up, task full / task sparse: {speedup:.1f}x (goal >= {SPEEDUP_GOAL:.0f}x): "
        f"{'PASS' if speedup_ok else 'GOAL MISSED'}"
    )
    print(
        f"    median of the rounds ({rounds(speedups)}); raw git full / sparse: "
        f"{median(raw_speedups):.1f}x ({rounds(raw_speedups)})"
    )
    print()
    print("Worker phases per rig, task full, all rounds (from the event log's timestamps):")
    phases: dict[str, list[float]] = defaultdict(list)
    for run in by_kind["task full"]:
        for name, values in run.phases.items():
            phases[name] += values
    print(
        table(
            ["phase", "p50 (ms)", "p95 (ms)"],
            [[k, percentile(v, 50) * 1000, percentile(v, 95) * 1000] for k, v in phases.items()],
        )
    )


def _per(count: int, m: int) -> int | float:
    return count // m if count % m == 0 else round(count / m, 1)


def print_profile(profile: Profile, raw_per_rig: float, label: str) -> None:
    m = profile.rigs
    git_total = sum(sum(v) for v in profile.git.values()) / m
    db_total, bc_total = sum(profile.db) / m, sum(profile.broadcast) / m
    total = (sum(profile.request) + sum(profile.provision)) / m
    groups = profile.broadcast_groups / max(1, len(profile.broadcast))
    rows = [
        [f"git {k}", _per(len(v), m), sum(v) / m * 1000, median(v) * 1000]
        for k, v in sorted(profile.git.items(), key=lambda kv: -sum(kv[1]))
    ]
    rows += [
        [
            "database queries",
            _per(profile.db_queries, m),
            db_total * 1000,
            median(profile.db) * 1000,
        ],
        [
            f"event broadcasts ({groups:.1f} group_send per call)",
            _per(len(profile.broadcast), m),
            bc_total * 1000,
            median(profile.broadcast) * 1000,
        ],
        ["Python, Django, the rest", "", (total - git_total - db_total - bc_total) * 1000, ""],
        ["total: rig_request + rig_provision_run", "", total * 1000, ""],
        ["  of which the repository lock is held", "", sum(profile.locked) / m * 1000, ""],
        [f"raw git, {label} (benchmark median)", "", raw_per_rig * 1000, ""],
    ]
    print()
    print(f"{label} rig (mean per rig over {m}; `git worktree add` + checkout is the real work):")
    print(table(["where", "calls/rig", "ms/rig", "ms/call p50"], rows))


if __name__ == "__main__":
    sys.exit(main())
