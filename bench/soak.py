"""The soak (issue 18 §3): convoys started continuously, a random fault every few minutes, the
audit every minute; at the end, what landed, what was survived, p99 API latency and the memory
of every long-lived process.

    .venv/bin/python bench/soak.py --minutes 30 [--convoy-every 20] [--fault-every 180]

What runs: two Celery workers (the first with the scheduler, `--beat`), the web server
(daphne, as `make run` starts it), and this driver acting as the agents through the API (an
agent token): it asks for three rigs per convoy (`POST rigs/`), waits for them, commits a file
in each worktree as an agent would, beats its heart and asks to land (`POST
rigs/{id}/merge-requests/`, with `force` since the driver closes no beads), and polls. The
convoy (three independent legs) is created and launched through the services, as the board
does. A gate runs on every landing (`test -f README.md`, sandboxed).

Faults, one at random every `--fault-every` seconds, from those this machine allows:
- a worker SIGKILLed at a named point (common/faults.py: the point is armed by removing its
  marker; the worker that gets there is killed with its pool, then started again);
- a worker SIGKILLed wherever it is, then started again;
- Redis killed and started again, empty (only when the soak started it: REDIS_URL unset);
- every app connection terminated (PostgreSQL only).

Nothing set: SQLite in a temporary data dir and a redis-server the soak starts (a TCP one it
may kill; the embedded default's is the same server on a socket). DATABASE_URL (and REDIS_URL)
select PostgreSQL (and that Redis, which is then never killed)."""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import BASE_DIR, bench_environment, git, percentile, worker_hostname

POINTS = [
    "worktree.add",
    "merge.before_update_ref",
    "merge.after_update_ref",
    "gate.running",
    "cascade.reading",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kib(pid: int) -> int:
    """RSS of a process and its children (a worker and its pool)."""
    total = rss_kib(pid)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int(
                    Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[1]
                )
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                total += rss_kib(int(entry.name))
    return total


class OwnRedis:
    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.directory = directory
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()


class Worker:
    """One Celery worker process, armed at every fault point (markers present: disarmed)."""

    def __init__(self, env, index: int, fault_dir: Path, beat: bool) -> None:
        self.env, self.index, self.fault_dir, self.beat = env, index, fault_dir, beat
        self.process: subprocess.Popen | None = None
        self.restarts = 0
        self.first_rss = 0

    def start(self) -> None:
        extra = (
            ["--beat", "--schedule", str(self.env.data_dir / "beat-schedule")] if self.beat else []
        )
        log = open(self.env.data_dir / f"worker-{self.index}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "gastown_site", "worker",
             "--queues", self.env.queue, "--hostname", worker_hostname(), "--pool", "prefork",
             "--concurrency", "2", "--loglevel", "WARNING", "--without-mingle", *extra],
            cwd=BASE_DIR, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**self.env.worker_env, "GASTOWN_FAULT_PAUSE": ",".join(POINTS),
                 "GASTOWN_FAULT_DIR": str(self.fault_dir), "GASTOWN_FAULT_PAUSE_SECONDS": "120"},
        )  # fmt: skip

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def owns(self, pid: int) -> bool:
        return pid == self.process.pid or f"{pid}" in _children(self.process.pid)


def _children(pid: int) -> set[str]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if stat[1] == str(pid):
                found.add(entry.name)
    return found


class Api:
    def __init__(self, base: str, token: str) -> None:
        self.base, self.token = base, token
        self.latencies: list[float] = []
        self.errors = Counter()

    def call(self, method: str, path: str, body: dict | None = None) -> dict | None:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.base}/api/v1/{path}", data=data, method=method,
            headers={"Authorization": f"Token {self.token}", "Content-Type": "application/json"},
        )  # fmt: skip
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                answer = json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            self.errors[exc.code] += 1
            answer = None
        except OSError:
            self.errors["unreachable"] += 1
            answer = None
        self.latencies.append(time.perf_counter() - started)
        return answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--convoy-every", type=float, default=20, help="seconds")
    parser.add_argument("--fault-every", type=float, default=180, help="seconds")
    parser.add_argument("--audit-every", type=float, default=60, help="seconds")
    parser.add_argument("--seed", type=int, default=18)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    own_redis = None
    if not os.environ.get("REDIS_URL"):
        import tempfile

        own_redis = OwnRedis(Path(tempfile.mkdtemp(prefix="gastown-soak-redis-")))
        own_redis.start()
        os.environ["REDIS_URL"] = own_redis.url
    try:
        with bench_environment(prefix="gastown-soak-") as env:
            soak(args, rng, env, own_redis)
    finally:
        if own_redis is not None:
            own_redis.kill()


def soak(args, rng: random.Random, env, own_redis: OwnRedis | None) -> None:
    from django.db import connection, transaction

    from audit.checks import audit_run
    from convoys import services as convoy_services
    from convoys.models import Convoy
    from rigs import services
    from rigs.models import MergeRequest

    postgres = connection.vendor == "postgresql"
    fault_dir = env.data_dir / "faults"
    fault_dir.mkdir()
    for point in POINTS:
        (fault_dir / point).write_text("disarmed")
    repo = env.data_dir / "repositories" / "app"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("# app\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    repository = services.repository_register(
        name="app", path=str(repo), gate_command="test -f README.md", batch_size=4
    )
    _, token = services.agent_create(name="soak")

    workers = [Worker(env, i, fault_dir, beat=(i == 0)) for i in range(2)]
    for worker in workers:
        worker.start()
    port = free_port()
    web_log = open(env.data_dir / "web.log", "wb")  # noqa: SIM115
    web = subprocess.Popen(
        [sys.executable, "-m", "gastown_site.web", "-b", "127.0.0.1", "-p", str(port),
         "gastown_site.asgi:application"],
        cwd=BASE_DIR, env={**env.worker_env, "GASTOWN_SSL_REDIRECT": "0"}, stdout=web_log,
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    api = Api(f"http://127.0.0.1:{port}", token)
    deadline = time.monotonic() + 60
    while api.call("GET", "me/") is None:
        if time.monotonic() > deadline:
            raise SystemExit("the web server did not start")
        time.sleep(0.5)
    api.latencies.clear()
    api.errors.clear()

    print(f"database: {env.database}; broker: {env.broker}; data dir {env.data_dir}", flush=True)
    started = time.monotonic()
    end = started + args.minutes * 60
    next_convoy = started
    next_fault = started + args.fault_every
    next_audit = started + args.audit_every
    warm_at = started + min(120, args.minutes * 60 / 4)
    memory: dict[str, list[int]] = {}
    rigs: dict[int, dict] = {}  # rig id -> {"stage", "mr", "slug"}
    faults = Counter()
    audits = violations = persistent = 0
    last_keys: set = set()
    counter = 0
    pending_fault: dict | None = None

    def sample_memory(when: int) -> None:
        procs = {"web": web.pid, **{f"worker-{w.index}": w.process.pid for w in workers}}
        if own_redis is not None:
            procs["redis"] = own_redis.process.pid
        for name, pid in procs.items():
            memory.setdefault(name, [0, 0])[when] = tree_rss_kib(pid)

    memory_sampled = False
    moving = ("provisioning", "merging")
    ended = False
    while True:
        now = time.monotonic()
        if now >= end and not ended:  # no more convoys or faults: what is in flight finishes
            ended = True
            sample_memory(1)
        if ended and (now > end + 300 or not any(j["stage"] in moving for j in rigs.values())):
            break
        if not memory_sampled and now >= warm_at:
            sample_memory(0)
            memory_sampled = True
        if now >= next_convoy and not ended:
            next_convoy = now + args.convoy_every
            counter += 1
            made = []
            for leg in ("a", "b", "c"):
                answer = api.call(
                    "POST", "rigs/", {"repository": repository.id, "slug": f"c{counter}{leg}"}
                )
                if answer:
                    made.append(answer["id"])
                    rigs[answer["id"]] = {"stage": "provisioning", "slug": f"c{counter}{leg}"}
            if made:
                with transaction.atomic():
                    convoy = convoy_services.convoy_create(
                        title=f"soak {counter}",
                        repository=repository,
                        target_branch="main",
                        legs=[{"key": f"l{i}", "title": f"leg {i}", "rig": r} for i, r in
                              enumerate(made)],
                    )  # fmt: skip
                convoy_services.convoy_launch(convoy=convoy)
        for rig_id, job in list(rigs.items()):
            if job["stage"] == "provisioning":
                rig = api.call("GET", f"rigs/{rig_id}/")
                if rig and rig["state"] in ("ready", "working"):
                    worktree = Path(rig["worktree_path"])
                    (worktree / f"{job['slug']}.txt").write_text(f"{job['slug']}\n")
                    git(worktree, "add", "-A")
                    git(worktree, "commit", "-q", "-m", f"{job['slug']}: work")
                    api.call("POST", f"rigs/{rig_id}/heartbeat/", {})
                    answer = api.call("POST", f"rigs/{rig_id}/merge-requests/", {"force": True})
                    if answer:
                        job.update(stage="merging", mr=answer["id"])
                elif rig and rig["state"] == "failed":
                    job["stage"] = "failed"
            elif job["stage"] == "merging":
                mr = api.call("GET", f"merge-requests/{job['mr']}/")
                if mr and mr["state"] == "merged":
                    job["stage"] = "merged"
                elif mr and mr["state"] in ("failed", "conflicted", "cancelled"):
                    job["stage"] = mr["state"]
        if pending_fault is not None:
            point = pending_fault["point"]
            marker = fault_dir / point
            text = marker.read_text().strip() if marker.exists() else ""
            if text.isdigit():
                pid = int(text)
                worker = next((w for w in workers if w.owns(pid)), None)
                if worker is not None:
                    worker.kill()
                    worker.start()
                    worker.restarts += 1
                marker.write_text("disarmed")
                pending_fault = None
            elif now - pending_fault["at"] > 90:  # nobody got there: not injected
                faults[f"worker SIGKILL at {point}"] -= 1
                marker.write_text("disarmed")
                pending_fault = None
        if now >= next_fault and pending_fault is None and not ended:
            next_fault = now + args.fault_every
            kinds = ["point", "point", "anywhere"]
            if own_redis is not None:
                kinds.append("redis")
            if postgres:
                kinds.append("postgres")
            kind = rng.choice(kinds)
            if kind == "point":
                point = rng.choice(POINTS)
                faults[f"worker SIGKILL at {point}"] += 1
                (fault_dir / point).unlink()  # armed
                pending_fault = {"point": point, "at": now}
            elif kind == "anywhere":
                worker = rng.choice(workers)
                worker.kill()
                worker.start()
                worker.restarts += 1
                faults["worker SIGKILL anywhere"] += 1
            elif kind == "redis":
                own_redis.kill()
                time.sleep(2)
                own_redis.start()
                faults["Redis killed, restarted empty"] += 1
            else:
                import psycopg

                with psycopg.connect(**connection.get_connection_params(), autocommit=True) as c:
                    c.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                        "datname = current_database() AND pid <> pg_backend_pid()"
                    )
                connection.close()
                faults["PostgreSQL connections terminated"] += 1
            print(f"[{(now - started) / 60:5.1f} min] fault: {kind}", flush=True)
        if now >= next_audit:
            next_audit = now + args.audit_every
            try:
                report = audit_run()
            except Exception as exc:  # a dropped connection mid-audit: next minute
                connection.close()
                print(f"audit failed: {exc}", flush=True)
            else:
                audits += 1
                violations += len(report.violations)
                keys = {v.key for v in report.violations}
                persistent += len(keys & last_keys)  # still there a minute later
                last_keys = keys
                if report.violations:
                    print(report.text(), flush=True)
        time.sleep(1)

    final = audit_run()
    stages = Counter(job["stage"] for job in rigs.values())
    landed = Convoy.objects.filter(state=Convoy.State.LANDED).count()
    merges = MergeRequest.objects.filter(state=MergeRequest.State.MERGED).count()
    print(f"\nsoak: {args.minutes:g} min on {env.database}, broker {env.broker}")
    print(f"convoys started {counter}, landed {landed}; merges {merges}")
    print(f"rigs by stage at the end: {dict(stages)}")
    stuck = stages["provisioning"] + stages["merging"]
    recovered = not final.violations and not stuck and not persistent
    print(f"faults injected {sum(faults.values())} ({'all recovered' if recovered else 'NOT'}):")
    for name in sorted(faults):
        print(f"  {name}: {faults[name]}")
    print(
        f"audits {audits + 1}: {violations} violations during ({persistent} still there at the "
        f"next audit), {len(final.violations)} at the end"
    )
    if final.violations:
        print(final.text())
    lat = sorted(api.latencies)
    print(
        f"API: {len(lat)} calls, p50 {percentile(lat, 50) * 1000:.0f} ms, p99 "
        f"{percentile(lat, 99) * 1000:.0f} ms; errors {dict(api.errors)}"
    )
    print("memory (RSS KiB, after warm-up -> end; restarted processes are new ones):")
    for name, (first, last) in sorted(memory.items()):
        growth = (last - first) / first * 100 if first else 0
        restarted = next((w.restarts for w in workers if f"worker-{w.index}" == name), 0)
        note = f" (restarted {restarted}x)" if restarted else ""
        print(f"  {name}: {first} -> {last} ({growth:+.0f}%){note}")
    web.send_signal(signal.SIGTERM)
    web.wait(30)
    for worker in workers:
        worker.process.send_signal(signal.SIGTERM)
        worker.process.wait(30)


if __name__ == "__main__":
    main()
