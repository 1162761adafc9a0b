"""The real processes, as `make run` starts them: the web process's /metrics shows what a worker
process counted (shared multiprocess files), and both log JSON lines with their role."""

import json
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import web_process, worker_process

TOKEN = "process-test-" + "t" * 24


def scrape(base: str) -> dict:
    request = urllib.request.Request(
        f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def json_lines(path: Path) -> list[dict]:
    """The log's JSON lines (Celery's banner and the like are not)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


@pytest.mark.worker
def test_the_web_process_shows_the_workers_task_metrics_and_both_log_json(
    redis_server, transactional_db, monkeypatch
):
    # the processes read these from the environment the tests hand them
    monkeypatch.setenv("LOG_FORMAT", "json")
    monkeypatch.setenv("GASTOWN_METRICS_TOKEN", TOKEN)
    dispatch = (
        "gastown_celery_task_duration_seconds_count",
        (("state", "SUCCESS"), ("task", "runner.tasks.agent_runs_dispatch")),
    )
    waited = (
        "gastown_celery_task_queue_wait_seconds_count",
        (("task", "runner.tasks.agent_runs_dispatch"),),
    )
    with web_process() as (base, web_log), worker_process() as app:
        app.send_task("rigs.tasks.rigs_mark_stalled")  # a periodic tick with nothing to do
        app.send_task("runner.tasks.agent_runs_dispatch")  # not a tick
        deadline = time.monotonic() + 60
        found = scrape(base)
        while dispatch not in found and time.monotonic() < deadline:
            time.sleep(0.3)
            found = scrape(base)
        assert found.get(dispatch, 0) >= 1, sorted(k for k in found if "celery" in k[0])
        assert found.get(waited, 0) >= 1
        worker_log = app.worker_log

    worker = json_lines(worker_log)
    assert worker, worker_log.read_text()[-2000:]
    ran = [line for line in worker if "agent_runs_dispatch" in line["message"]]
    assert any("succeeded" in line["message"] for line in ran), ran
    succeeded = next(line for line in ran if "succeeded" in line["message"])
    assert succeeded["role"] == "worker" and succeeded["level"] == "INFO"
    assert succeeded["task"] == "runner.tasks.agent_runs_dispatch" and succeeded["task_id"]
    # the idle tick: neither "received" nor "succeeded" at INFO
    assert [line for line in worker if "rigs_mark_stalled" in line["message"]] == []

    access = [line for line in json_lines(web_log) if line["logger"] == "gastown.access"]
    scraped = [line for line in access if line.get("path") == "/metrics"]
    assert scraped, json_lines(web_log)[-5:]
    assert scraped[-1]["status"] == 200 and scraped[-1]["method"] == "GET"
    assert scraped[-1]["role"] == "web" and isinstance(scraped[-1]["duration_ms"], float)
