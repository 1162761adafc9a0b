"""API load: many agents polling the API at once, against the ASGI server as deployed.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379/12 \
        .venv/bin/python bench/api_load.py [--agents 100] [--rate 1] [--seconds 60] [--web 1]

Sets up a throwaway installation (bench/common.py: a database `gastown_bench_<pid>` dropped at
the end, a private data dir), fills it with ``--agents`` agents, each with a working rig, 20
beads (a few blocked) and a few notifications, then starts ``--web`` daphne processes serving
`gastown_site.asgi:application` as `make run` does (DEBUG off, token auth, throttling on
Redis), each on its own loopback port (agents are spread over them: there is no balancer).

A separate load process (this script with `--client`, plain asyncio and HTTP/1.1 keep-alive,
one connection per agent) runs each agent at ``--rate`` requests a second, in turn:
`GET beads/?rig=<its rig>&ready=true`, `POST rigs/<its rig>/heartbeat/`, and
`GET notifications/?rig=<its rig>&unacked=true` with the `ETag` of its last answer in
`If-None-Match` (as a polling agent does). Requests are scheduled at fixed times (agents start
spread over the first second) and latency counts from the scheduled time, so a server that
falls behind shows it (no coordinated omission).

Reports p50/p95/p99/max latency per call and overall, and errors (anything but 200/304, or a
connection failure), after ``--warmup`` seconds of the same load that are not counted. Goal:
p99 < 100 ms with zero errors. Loopback only; bounded in time. ``--db`` runs the web processes
with another way of holding database connections (see the "API load" section of
docs/benchmarks.md). Exits 0 even when the goal is missed: it is a measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import BASE_DIR, percentile, table

GOAL_P99_MS = 100.0


# --- the load client (a separate process) --------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection (responses with Content-Length or chunked)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if method == "POST":
            lines.append("Content-Length: 0")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        got = {}
        for line in header_lines:
            if ":" in line:
                name, value = line.split(":", 1)
                got[name.strip().lower()] = value.strip()
        if "content-length" in got:
            await self.reader.readexactly(int(got["content-length"]))
        elif got.get("transfer-encoding") == "chunked":
            while True:
                size = int((await self.reader.readline()).strip(), 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        if got.get("connection", "").lower() == "close":
            self.close()
        return status, got

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def run_agent(plan: dict, index: int, n_agents: int, args, started: float, out: list):
    conn = Connection("127.0.0.1", plan["port"])
    headers = {"Authorization": f"Token {plan['token']}", "Accept": "application/json"}
    calls = [
        ("ready", "GET", f"/api/v1/beads/?rig={plan['rig']}&ready=true"),
        ("heartbeat", "POST", f"/api/v1/rigs/{plan['rig']}/heartbeat/"),
        ("inbox", "GET", f"/api/v1/notifications/?rig={plan['rig']}&unacked=true"),
    ]
    etag = ""
    interval = 1.0 / args.rate
    offset = index / n_agents  # spread the agents over the first second
    total = int((args.warmup + args.seconds) * args.rate)
    measured_from = started + args.warmup
    for k in range(total):
        scheduled = started + offset + k * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        name, method, path = calls[k % len(calls)]
        extra = {"If-None-Match": etag} if name == "inbox" and etag else {}
        try:
            status, got = await asyncio.wait_for(
                conn.request(method, path, {**headers, **extra}), timeout=10
            )
            ok = status in (200, 304)
            if name == "inbox" and status == 200:
                etag = got.get("etag", "")
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            conn.close()
            status, ok = f"{type(exc).__name__}", False
        done = time.perf_counter()
        if scheduled >= measured_from:
            out.append((name, (done - scheduled) * 1000, ok, status))
    conn.close()


async def client_main(plans: list[dict], args) -> list:
    out: list = []
    started = time.perf_counter() + 0.5
    await asyncio.gather(
        *(run_agent(plan, i, len(plans), args, started, out) for i, plan in enumerate(plans))
    )
    return out


def client(args) -> int:
    plans = json.loads(Path(args.client).read_text())
    results = asyncio.run(client_main(plans, args))
    json.dump(results, sys.stdout)
    return 0


# --- setup, server, report ------------------------------------------------------------------------


def populate(agents: int) -> list[dict]:
    """Agents with a working rig, 20 beads (every fifth blocked by the one before) and three
    notifications each. Returns [{token, rig}]."""
    from convoys import services
    from notifications import services as notification_services
    from notifications.models import Notification
    from rigs.models import Repository, Rig
    from rigs.services import agent_create

    repository = Repository.objects.create(name="bench", path="/nonexistent/bench")
    plans = []
    for n in range(agents):
        agent, token = agent_create(name=f"agent-{n:03d}")
        rig = Rig.objects.create(
            repository=repository,
            slug=f"rig-{n:03d}",
            agent=agent,
            branch=f"rig/rig-{n:03d}",
            state=Rig.State.WORKING,
        )
        beads = [
            services.bead_create(title=f"task {i} of {rig.slug}", rig=rig, priority=i % 5)
            for i in range(20)
        ]
        for i in range(4, 20, 5):
            services.bead_dependency_add(bead=beads[i], depends_on=beads[i - 1])
        for i in range(3):
            notification_services.notification_send(
                rig=rig,
                kind=Notification.Kind.INFO,
                severity=Notification.Severity.INFO,
                summary=f"note {i} for {rig.slug}",
            )
        plans.append({"token": token, "rig": rig.id})
    return plans


def settings_override(args, data_dir: Path) -> dict[str, str]:
    """Environment for the web processes. By default the settings as deployed; `--db` changes
    only how they hold database connections (a settings module that wraps the real one)."""
    if args.db == "deployed":
        return {}
    lines = ["from gastown_site.settings import *  # noqa", "", "_db = DATABASES['default']"]
    lines.append("_db['CONN_MAX_AGE'] = 0")
    if args.db == "pool":  # Django 5.1+: psycopg's pool, shared by the process's threads
        lines.append(f"_db['OPTIONS']['pool'] = {{'min_size': 4, 'max_size': {args.pool_size}}}")
    (data_dir / "api_load_settings.py").write_text("\n".join(lines) + "\n")
    path = os.pathsep.join([str(data_dir), os.environ.get("PYTHONPATH", "")])
    return {"DJANGO_SETTINGS_MODULE": "api_load_settings", "PYTHONPATH": path}


def start_web(port: int, data_dir: Path, extra_env: dict[str, str]) -> subprocess.Popen:
    log = open(data_dir / f"daphne-{port}.log", "wb")  # noqa: SIM115 - lives with the process
    return subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
         "gastown_site.asgi:application"],
        cwd=BASE_DIR, env={**os.environ, "DEBUG": "0", **extra_env}, stdout=log,
        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


def wait_up(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"daphne on port {port} did not start") from None
            time.sleep(0.2)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def report(results: list, args, env_text: str, wall: float) -> None:
    rows = []
    by_name: dict[str, list[float]] = {}
    for name, ms, _, _ in results:
        by_name.setdefault(name, []).append(ms)
    for name in ("ready", "heartbeat", "inbox"):
        values = by_name.get(name, [])
        errors = sum(1 for n, _, ok, _ in results if n == name and not ok)
        worst = max(values, default=float("nan"))
        rows.append((name, len(values), percentile(values, 50), percentile(values, 95),
                     percentile(values, 99), worst, errors))  # fmt: skip
    every = [ms for _, ms, _, _ in results]
    errors = [(n, s) for n, _, ok, s in results if not ok]
    rows.append(("all", len(every), percentile(every, 50), percentile(every, 95),
                 percentile(every, 99), max(every, default=float("nan")), len(errors)))  # fmt: skip
    not_modified = sum(1 for n, _, _, s in results if n == "inbox" and s == 304)
    print(f"\n{env_text}")
    print(
        f"{args.agents} agents x {args.rate} req/s for {args.seconds:.0f} s "
        f"({args.agents * args.rate:.0f} req/s offered; {len(results) / wall:.0f} req/s done), "
        f"after {args.warmup:.0f} s of warm-up; {args.web} daphne process(es); "
        f"inbox 304s: {not_modified}\n"
    )
    print(table(["call", "n", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors"], rows))
    p99 = percentile(every, 99)
    verdict = "met" if p99 < GOAL_P99_MS and not errors else "MISSED"
    print(f"\ngoal p99 < {GOAL_P99_MS:.0f} ms, zero errors: {verdict}")
    if errors:
        print(f"first errors: {errors[:10]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--rate", type=float, default=1.0, help="requests/s per agent (1)")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured (60)")
    parser.add_argument(
        "--warmup", type=float, default=5.0, help="seconds of load before measuring (5)"
    )
    parser.add_argument("--web", type=int, default=1, help="daphne processes (1)")
    parser.add_argument(
        "--db",
        choices=["deployed", "no-persist", "pool"],
        default="deployed",
        help="database connections: as the settings say (deployed), CONN_MAX_AGE=0 "
        "(no-persist), or psycopg's pool (pool; needs psycopg-pool)",
    )
    parser.add_argument("--pool-size", type=int, default=16)
    parser.add_argument("--keep", action="store_true", help="keep the data dir (server logs)")
    parser.add_argument("--client", help=argparse.SUPPRESS)  # internal: run as the load process
    args = parser.parse_args()
    if args.client:
        return client(args)
    if not 1 <= args.agents <= 1000 or not 0 < args.seconds <= 600 or not 0 < args.rate <= 20:
        parser.error("keep it bounded: 1-1000 agents, up to 600 s, up to 20 req/s each")

    from bench.common import bench_environment

    with bench_environment(prefix="gastown-api-load-", keep=args.keep) as env:
        from django.conf import settings

        t0 = time.perf_counter()
        plans = populate(args.agents)
        print(f"populated {args.agents} agents in {time.perf_counter() - t0:.1f} s")
        from django.db import connections

        connections.close_all()
        ports = [free_port() for _ in range(args.web)]
        extra_env = settings_override(args, env.data_dir)
        servers = [start_web(port, env.data_dir, extra_env) for port in ports]
        try:
            for port in ports:
                wait_up(port)
            for n, plan in enumerate(plans):
                plan["port"] = ports[n % len(ports)]
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
                json.dump(plans, handle)
            started = time.perf_counter()
            load = subprocess.run(
                [sys.executable, __file__, "--client", handle.name, "--rate", str(args.rate),
                 "--seconds", str(args.seconds), "--agents", str(args.agents),
                 "--warmup", str(args.warmup)],
                capture_output=True, text=True, timeout=args.warmup + args.seconds + 120,
                check=False,
            )  # fmt: skip
            wall = time.perf_counter() - started - 0.5 - args.warmup
            os.unlink(handle.name)
            if load.returncode != 0:
                print(load.stderr[-3000:], file=sys.stderr)
                return 1
            results = json.loads(load.stdout)
        finally:
            for server in servers:
                server.terminate()
            for server in servers:
                try:
                    server.wait(20)
                except subprocess.TimeoutExpired:
                    server.kill()
        db = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
        env_text = (
            f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {env.database} ({db}), "
            f"{env.broker}; database connections: {args.db}"
        )
        report(results, args, env_text, wall)
    return 0


if __name__ == "__main__":
    sys.exit(main())
