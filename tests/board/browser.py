"""Debian's Chromium driven by Playwright, for the board's browser tests."""

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connections

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "board"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.contextmanager
def chromium_launched(monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """A headless Chromium for one test. Call it after the server and the worker started:
    it lets this thread make ORM calls while Playwright's event loop runs in it, and their
    processes must not inherit that."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (/usr/bin/chromium): make browser-deps")
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()
            # The ORM calls made while Playwright's event loop ran in this thread leave a
            # connection open; close it, or PostgreSQL refuses to drop the test database.
            connections.close_all()
