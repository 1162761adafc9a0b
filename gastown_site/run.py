"""`make run`: start the web server and the background worker together.

Embedded default (no REDIS_URL): also starts the embedded Redis under the data dir.
Makes the admin login when there is none. On an empty database it seeds the demo (a sample
repository and the article's convoy, run by scripted agents) unless `--no-demo` or
`GASTOWN_DEMO=0`. Once the web answers and the worker is up, prints the addresses and the admin
login in a block of their own (after the start-up logs, not lost among them).
Each child's lines are prefixed with its role (`web    | ...`) with LOG_FORMAT=text; JSON lines
carry their role themselves and pass unchanged.
Stops everything on Ctrl-C, and everything when any one part dies.
"""

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)

DEMO_OFF_VALUES = ("0", "false", "no", "off")
READY_TIMEOUT_SECONDS = 120.0
Login = tuple[str, str | None]  # (user name, its password when it was made just now)


def demo_enabled(*, no_demo: bool, environ: Mapping[str, str]) -> bool:
    """Whether `make run` may seed the demo: not with `--no-demo`, nor with GASTOWN_DEMO set to
    0, false, no or off."""
    return not no_demo and environ.get("GASTOWN_DEMO", "1").strip().lower() not in DEMO_OFF_VALUES


def public_url(host: str, port: str | int) -> str:
    """The URL agents on this machine reach the server at (a wildcard bind means loopback)."""
    if host in ("", "0.0.0.0", "::", "[::]"):  # noqa: S104 (recognizing it, not binding)
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    return f"http://{host}:{port}"


def demo_seed_on_start() -> None:
    """Seed the demo on an empty database and say where to watch it. A failure is reported and
    the server starts anyway."""
    from demo.seed import demo_seed_if_empty

    try:
        convoy = demo_seed_if_empty()
    except Exception:
        logger.exception("could not seed the demo; starting without it")
        return
    if convoy is not None:
        path = convoy.repository.path
        print(
            f"demo: seeded convoy '{convoy.title}' on a sample repository "
            f"(watch its history: git -C {path} log --oneline --graph; "
            "GASTOWN_DEMO=0 or --no-demo skips this)",
            flush=True,
        )


def admin_login_on_start() -> Login | None:
    """The admin login to show: made now (with its password, shown once) when there is no
    superuser. None when it cannot be read (then the block says so, and the server starts)."""
    from rigs.services import admin_login_ensure

    try:
        return admin_login_ensure()
    except Exception:
        logger.exception("could not read or make the admin login")
        return None


def ready_block(url: str, *, login: Login | None, data_dir: str | Path) -> str:
    """What `make run` prints once it is ready: where to go and how to log in, set apart by
    rules so that it stands out of the worker's logs."""
    if login is None:
        who = "unknown (see the log above); python manage.py ensure_admin makes one"
    elif login[1] is not None:
        who = f"{login[0]} / {login[1]}   (made now, shown only this once: change it in the admin)"
    else:
        who = (
            f"{login[0]}   (password as shown when it was made; "
            f"python manage.py changepassword {login[0]} sets a new one)"
        )
    rule = "=" * 78
    return "\n".join(
        [
            "",
            rule,
            "  Gas Town is ready",
            f"  board     {url}/",
            f"  admin     {url}/admin/",
            f"  API docs  {url}/api/docs/",
            f"  login     {who}",
            f"  data dir  {data_dir}   (Ctrl-C stops everything)",
            rule,
            "",
        ]
    )


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:  # noqa: S310
            return response.status == 200
    except OSError:
        return False


def _worker_answers() -> bool:
    from gastown_site.celery import app

    try:
        return bool(app.control.ping(timeout=1.0))
    except Exception:  # the broker is still starting
        return False


def wait_ready(
    url: str,
    children: list[tuple[str, subprocess.Popen]],
    stopping: Callable[[], bool],
    timeout: float = READY_TIMEOUT_SECONDS,
) -> bool:
    """Wait until the web answers /healthz and a worker answers a ping. False when a child
    exits, Ctrl-C is pressed or `timeout` passes first."""
    deadline = time.monotonic() + timeout
    web = False
    while time.monotonic() < deadline and not stopping():
        if any(child.poll() is not None for _, child in children):
            return False
        web = web or _answers(url)
        if web and _worker_answers():
            return True
        time.sleep(0.3)
    return False


def role_prefix(role: str) -> str:
    return f"{role:<6} | "


def lines_copy(source: IO[bytes], target: IO[bytes], prefix: str) -> None:
    """Copy `source` to `target` line by line, each line prefixed (until `source` closes)."""
    head = prefix.encode()
    for line in iter(source.readline, b""):
        target.write(head + line)
        target.flush()
    source.close()


def child_start(role: str, command: list[str], *, prefixed: bool) -> subprocess.Popen:
    """Start one part with GASTOWN_ROLE set; its output goes to ours, prefixed when asked."""
    env = {**os.environ, "GASTOWN_ROLE": role, "PYTHONUNBUFFERED": "1"}
    if not prefixed:
        return subprocess.Popen(command, env=env)
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    threading.Thread(
        target=lines_copy,
        args=(child.stdout, sys.stdout.buffer, role_prefix(role)),
        name=f"{role}-output",
        daemon=True,
    ).start()
    return child


def metrics_dir_empty(path: Path | None) -> None:
    """The shared metrics files of a previous run describe processes that are gone."""
    if path is None or not path.is_dir():
        return
    for entry in path.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def agent_runs_stop() -> None:
    """Stop the agent processes this machine started, before their worker goes away."""
    try:
        from runner.operations import agent_runs_shutdown

        agent_runs_shutdown()
    except Exception:
        logger.exception("could not stop the agent runs; stopping the rest")


def main() -> int:
    parser = argparse.ArgumentParser(description="Run Gas Town: web server and worker.")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", default=os.environ.get("PORT", "8000"))
    parser.add_argument(
        "--concurrency",
        default=os.environ.get("GASTOWN_WORKER_CONCURRENCY", str(os.cpu_count() or 2)),
    )
    parser.add_argument(
        "--no-demo",
        action="store_true",
        help="Do not seed the demo on an empty database (also: GASTOWN_DEMO=0).",
    )
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gastown_site.settings")
    import django

    django.setup()
    from django.conf import settings

    from gastown_site import embedded

    children: list[tuple[str, subprocess.Popen]] = []
    redis_process = None
    if not settings.REDIS_URL:
        if embedded.redis_ping(settings.EMBEDDED_REDIS_SOCKET):
            print(f"Gas Town already runs on this data dir ({settings.DATA_DIR}).", file=sys.stderr)
            return 1
        redis_process = embedded.redis_start(
            settings.EMBEDDED_REDIS_SOCKET, settings.DATA_DIR / "redis"
        )
        print(f"embedded Redis on {settings.EMBEDDED_REDIS_SOCKET}")

    # The runner hands this to the agents it starts (as GT_URL); an explicit setting wins.
    url = public_url(args.host, args.port)
    os.environ.setdefault("GASTOWN_URL", url)
    login = admin_login_on_start()
    if demo_enabled(no_demo=args.no_demo, environ=os.environ):
        demo_seed_on_start()

    # every part of this machine starts now: counters start from zero with them
    metrics_dir_empty(settings.GASTOWN_METRICS_DIR)
    prefixed = settings.LOG_FORMAT == "text"
    python = sys.executable
    worker = [python, "-m", "celery", "-A", "gastown_site"]
    if not prefixed:
        worker.append("--quiet")  # no banner: the output stays one JSON object per line
    worker += [
        "worker",
        "--beat",
        "--concurrency",
        args.concurrency,
        "--schedule",
        settings.CELERY_BEAT_SCHEDULE_FILENAME,
    ]
    children.append(("worker", child_start("worker", worker, prefixed=prefixed)))
    web = [
        python,
        "-m",
        "gastown_site.web",
        "-b",
        args.host,
        "-p",
        str(args.port),
        "gastown_site.asgi:application",
    ]
    children.append(("web", child_start("web", web, prefixed=prefixed)))
    print(f"Gas Town starting on {url}/ (Ctrl-C stops)", flush=True)

    stopping = False

    def stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    exit_code = 0
    try:
        if wait_ready(url, children, lambda: stopping):
            print(ready_block(url, login=login, data_dir=settings.DATA_DIR), flush=True)
        elif not stopping and all(child.poll() is None for _, child in children):
            limit = f"{READY_TIMEOUT_SECONDS:g} s"
            print(f"Gas Town did not answer at {url} within {limit}: see above.", flush=True)
        while not stopping:
            for name, child in children:
                if child.poll() is not None:
                    print(f"{name} exited with {child.returncode}; stopping.", file=sys.stderr)
                    exit_code = child.returncode or 1
                    stopping = True
            time.sleep(0.3)
    finally:
        agent_runs_stop()
        for _, child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for _, child in reversed(children):
            try:
                child.wait(20)
            except subprocess.TimeoutExpired:
                child.kill()
        if redis_process is not None:
            embedded.redis_stop(redis_process)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
