"""`make run`: start the web server and the background worker together.

Embedded default (no REDIS_URL): also starts the embedded Redis under the data dir.
Stops everything on Ctrl-C, and everything when any one part dies.
"""

import argparse
import os
import signal
import subprocess
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description="Run Gas Town: web server and worker.")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", default=os.environ.get("PORT", "8000"))
    parser.add_argument(
        "--concurrency",
        default=os.environ.get("GASTOWN_WORKER_CONCURRENCY", str(os.cpu_count() or 2)),
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

    python = sys.executable
    children.append(
        (
            "worker",
            subprocess.Popen(
                [
                    python,
                    "-m",
                    "celery",
                    "-A",
                    "gastown_site",
                    "worker",
                    "--beat",
                    "--loglevel",
                    "INFO",
                    "--concurrency",
                    args.concurrency,
                    "--schedule",
                    settings.CELERY_BEAT_SCHEDULE_FILENAME,
                ]
            ),
        )
    )
    children.append(
        (
            "web",
            subprocess.Popen(
                [
                    python,
                    "-m",
                    "daphne",
                    "-b",
                    args.host,
                    "-p",
                    str(args.port),
                    "gastown_site.asgi:application",
                ]
            ),
        )
    )
    print(f"Gas Town on http://{args.host}:{args.port}/ (Ctrl-C stops)", flush=True)

    stopping = False

    def stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    exit_code = 0
    try:
        while not stopping:
            for name, child in children:
                if child.poll() is not None:
                    print(f"{name} exited with {child.returncode}; stopping.", file=sys.stderr)
                    exit_code = child.returncode or 1
                    stopping = True
            time.sleep(0.3)
    finally:
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
