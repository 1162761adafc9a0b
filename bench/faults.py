"""The fault campaign, repeated (issue 18 §2): every row of tests/faults/ run `--repeat` times,
each run a fresh pytest process (its own test database, data dir and workers), then the table
docs/reliability.md keeps: fault, injected, recovered, lost.

    .venv/bin/python bench/faults.py [--repeat 5] [-k worktree]

A row counts as recovered when its test passed: the fault was injected (the worker reached the
point and was killed there), the system recovered by itself, and the audit afterwards was clean
(nothing lost, nothing published twice, no claim held twice). A failed run is "lost" and its
output is kept under the printed folder. Runs on what the environment selects: SQLite and an
embedded Redis by default; DATABASE_URL / REDIS_URL for PostgreSQL and a Redis server (the
Redis-restart row always starts its own redis-server)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("-k", default="", help="only the rows whose test name matches")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="gastown-faults-"))
    tally: dict[str, dict[str, int]] = defaultdict(lambda: {"injected": 0, "recovered": 0})
    seconds: dict[str, float] = defaultdict(float)
    started = time.monotonic()
    for i in range(args.repeat):
        report = out / f"run-{i}.xml"
        command = [
            sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "tests/faults",
            f"--junitxml={report}", *(["-k", args.k] if args.k else []),
        ]  # fmt: skip
        log = out / f"run-{i}.log"
        with open(log, "w") as handle:
            subprocess.run(
                command,
                cwd=BASE_DIR,
                env={**os.environ, "GASTOWN_FAULTS": "1"},
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        for case in ET.parse(report).getroot().iter("testcase"):
            if case.find("skipped") is not None:
                continue
            name = case.get("name", "")
            tally[name]["injected"] += 1
            seconds[name] += float(case.get("time", 0))
            if case.find("failure") is None and case.find("error") is None:
                tally[name]["recovered"] += 1
        print(f"run {i + 1}/{args.repeat} done ({time.monotonic() - started:.0f} s)", flush=True)
    print("\n| fault | injected | recovered | lost | mean s |\n|---|---|---|---|---|")
    for name, row in sorted(tally.items()):
        lost = row["injected"] - row["recovered"]
        mean = seconds[name] / max(1, row["injected"])
        print(f"| {name} | {row['injected']} | {row['recovered']} | {lost} | {mean:.1f} |")
    print(f"\nlogs and reports: {out}")


if __name__ == "__main__":
    main()
