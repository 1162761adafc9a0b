"""The board in a real browser: Debian's Chromium driven by Playwright, against the real ASGI
server (daphne) and a real Celery worker, on the test database.

One journey, as an operator and a viewer would live it: log in, create a convoy (and see a
per-field error first), launch it by dragging its card, see a refused drag snap back with the
reason, and, in a second browser context, watch a merge landed by the worker appear without a
reload, across a dropped websocket. Screenshots land in test-artifacts/board/.
"""

import os
import time
from pathlib import Path

import pytest
from django.db import connections, transaction

from convoys import services as convoy_services
from convoys.models import Convoy, Leg, LegDependency
from rigs import operations, services
from rigs.models import MergeRequest, Rig
from tests import factories
from tests.board.browser import ARTIFACTS, CHROMIUM, chromium_launched
from tests.board.conftest import PASSWORD
from tests.rigs.helpers import commit_file, register, wait_for, wait_rig_state

pytestmark = [
    pytest.mark.browser,
    pytest.mark.worker,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian's chromium is not installed (/usr/bin/chromium): run `make browser-deps`",
    ),
]


@pytest.fixture
def browser(asgi_server, celery_worker, monkeypatch):
    with chromium_launched(monkeypatch) as chromium:
        yield chromium


def log_in(browser, base: str, username: str, **context_args):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, **context_args)
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(f"{base}/")
    assert "/login/" in page.url  # login is required
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")
    return context, page


def box_of(locator) -> dict:
    """The element's box, once it has one: a live refresh may replace the element just when we
    read it (then Playwright answers None), so read again."""
    for _ in range(100):
        box = locator.bounding_box()
        if box is not None:
            return box
        locator.page.wait_for_timeout(100)
    raise AssertionError(f"{locator} never became visible")


def drag(page, source, target) -> None:
    """Drag with real mouse events (the board's SortableJS uses them, not native DnD)."""
    src, dst = box_of(source), box_of(target)
    page.mouse.move(src["x"] + src["width"] / 2, src["y"] + 12)
    page.mouse.down()
    page.mouse.move(src["x"] + src["width"] / 2 + 10, src["y"] + 22, steps=4)
    page.mouse.move(dst["x"] + dst["width"] / 2, dst["y"] + 40, steps=20)
    page.mouse.up()


def shot(page, name: str, full_page: bool = True) -> Path:
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def board_scenery(repository) -> None:
    """A few more convoys, so the screenshot shows every column (made directly: the states
    they are in take work the journey above does not do)."""
    S, L, R = Convoy.State, Leg.State, Rig.State
    for title, state, legs in [
        ("Billing export", S.DRAFT, [("csv", L.PENDING, None), ("ui", L.PENDING, None)]),
        ("Search index", S.BLOCKED, [("indexer", L.READY, R.FAILED), ("ui", L.PENDING, None)]),
        (
            "Dark mode",
            S.LANDING,
            [("tokens", L.LANDED, R.MERGED), ("css", L.MERGING, R.MERGING)],
        ),
        ("Audit log", S.LANDED, [("api", L.LANDED, R.MERGED), ("docs", L.LANDED, R.MERGED)]),
    ]:
        convoy = factories.convoy(repository=repository, title=title, state=state)
        previous = None
        for key, leg_state, rig_state in legs:
            rig = (
                factories.rig(repository=repository, slug=f"{convoy.slug}-{key}", state=rig_state)
                if rig_state
                else None
            )
            leg = factories.leg(convoy=convoy, key=key, state=leg_state, rig=rig)
            if previous is not None:
                LegDependency.objects.create(leg=leg, depends_on=previous)
            previous = leg


def test_operator_and_viewer_conduct_a_convoy_live(
    browser, asgi_server, git_repo, operator, viewer
):
    from playwright.sync_api import expect

    base = asgi_server
    repository = register(git_repo, gate_command="echo 'gate: 12 tests passed'")
    alice, _ = services.agent_create(name="alice")
    services.agent_create(name="bob")
    with transaction.atomic():
        api = services.rig_request(repository=repository, slug="api", agent=alice)
    operations.rig_provision_run(api.id)  # (the worker may be doing it already)
    wait_rig_state(api, Rig.State.READY)

    # --- operator: log in, create a convoy (a bad dependency first) ---------------------------
    ctx_a, page = log_in(browser, base, operator.username)
    expect(page.locator("#live-indicator")).to_have_text("Live")
    page.click("text=New convoy")
    page.fill("#id_title", "Auth system")
    page.select_option("#id_repository", str(repository.id))
    page.fill("#leg-key-1", "api")
    page.fill("#leg-title-1", "API endpoints")
    page.select_option("#leg-assignee-1", f"rig:{api.id}")
    page.fill("#leg-key-2", "docs")
    page.fill("#leg-title-2", "Document the tokens")
    page.select_option("#leg-assignee-2", "agent:bob")
    page.fill("#leg-deps-2", "api, schema")
    page.click("text=Create draft convoy")
    expect(page.locator("#form-errors")).to_be_visible()
    expect(page.locator("[data-leg-row]").nth(1).locator(".field-error")).to_contain_text(
        "unknown leg 'schema'"
    )
    page.fill("#leg-deps-2", "api")
    page.click("text=Create draft convoy")
    expect(page.locator("h1 [data-convoy-state]")).to_have_text("Draft")
    convoy = Convoy.objects.get(title="Auth system")
    assert convoy.legs.count() == 2

    # --- operator: drag the card from Draft to Launched ---------------------------------------
    page.goto(f"{base}/")
    expect(page.locator("#live-indicator")).to_have_text("Live")
    card = page.locator(f"#convoy-{convoy.id}")
    expect(card).to_have_attribute("data-state", "draft")
    drag(page, card, page.locator('.cards[data-column="launched"]'))
    launched_card = page.locator(f'.cards[data-column="launched"] #convoy-{convoy.id}')
    expect(launched_card).to_be_visible()
    expect(launched_card).to_have_attribute("data-state", "launched")
    convoy.refresh_from_db()
    assert convoy.state == Convoy.State.LAUNCHED

    # --- operator: a refused drag (landing is derived) snaps back with the reason --------------
    drag(page, launched_card, page.locator('.cards[data-column="landing"]'))
    expect(page.locator(".toast-error")).to_contain_text("landing is derived from the merge queue")
    expect(launched_card.locator(".card-refusal")).to_contain_text("cannot be dragged")
    expect(launched_card).to_be_visible()  # back in Launched
    expect(page.locator(f'.cards[data-column="landing"] #convoy-{convoy.id}')).to_have_count(0)
    convoy.refresh_from_db()
    assert convoy.state == Convoy.State.LAUNCHED

    # --- operator: the keyboard way, the card's Move menu (cancels another draft) -------------
    spare = convoy_services.convoy_create(
        title="Spare", repository=repository, legs=[{"key": "x", "title": "X", "agent": "bob"}]
    )
    page.reload()
    expect(page.locator("#live-indicator")).to_have_text("Live")
    page.locator(f"#convoy-{spare.id} .move summary").focus()
    page.keyboard.press("Enter")
    page.locator(f'#convoy-{spare.id} button[value="cancelled"]').focus()
    page.keyboard.press("Enter")  # (the confirmation dialog is accepted)
    # cancelled ones are hidden (a POST, then the board's refresh: slow when CI's suites overlap)
    expect(page.locator(f"#convoy-{spare.id}")).to_have_count(0, timeout=15_000)
    spare.refresh_from_db()
    assert spare.state == Convoy.State.CANCELLED

    # --- viewer, in a second browser context: no controls, live board -------------------------
    ctx_b, watcher = log_in(browser, base, viewer.username)
    expect(watcher.locator("#live-indicator")).to_have_text("Live")
    watched = watcher.locator(f"#convoy-{convoy.id}")
    expect(watched.locator("[data-progress]")).to_have_text("0/2 legs landed")
    assert watcher.locator(".move").count() == 0
    assert watcher.locator("text=New convoy").count() == 0
    watcher.evaluate("window.__sameDocument = true")

    # The agent commits on the api rig; a sync records it.
    commit_file(Path(api.worktree_path), "auth/views.py", "def login():\n    return 'ok'\n")
    commit_file(Path(api.worktree_path), "auth/tokens.py", "def make_token(u):\n    return u\n")
    operations.rig_sync_run(api.id)

    # The viewer's connection drops; the page reconnects and replays what it missed.
    watcher.evaluate("GasTown.live.socket.close()")
    expect(watcher.locator("#live-indicator")).to_have_text("Reconnecting…", timeout=2_000)

    # --- operator asks to land the api leg from the convoy page; the worker merges it ---------
    page.goto(f"{base}/convoys/{convoy.id}/")
    api_row = page.locator(f"#leg-{convoy.legs.get(key='api').id}")
    asked = time.monotonic()
    api_row.locator("text=Request merge").click()
    expect(page.locator(".toast-success")).to_contain_text("queued")

    # The viewer's board shows the landed leg without a reload.
    expect(watched.locator("[data-progress]")).to_have_text("1/2 legs landed", timeout=30_000)
    seen_after = time.monotonic() - asked
    expect(watcher.locator("#live-indicator")).to_have_text("Live")
    assert watcher.evaluate("window.__sameDocument") is True
    # ...and so does the operator's convoy page, in place.
    expect(api_row.locator("[data-leg-badge]")).to_have_text("landed", timeout=10_000)
    mr = MergeRequest.objects.get(rig=api)
    assert mr.state == MergeRequest.State.MERGED
    print(f"merge requested → shown on the viewer's board in {seen_after:.2f}s")

    # --- screenshots of the pages, at 1280 px and at phone width ------------------------------
    docs_rig = wait_for(
        lambda: Leg.objects.select_related("rig").get(convoy=convoy, key="docs").rig,
        message="docs rig",
    )
    wait_rig_state(docs_rig, Rig.State.READY, Rig.State.FAILED)
    leg_api = Leg.objects.get(convoy=convoy, key="api")
    for title, priority in [("Rate-limit token refresh", 1), ("Expire stale tokens", 2)]:
        convoy_services.bead_create(title=title, rig=api, leg=leg_api, priority=priority)
    board_scenery(repository)
    page.goto(f"{base}/")
    expect(page.locator(f"#convoy-{convoy.id} [data-progress]")).to_have_text("1/2 legs landed")
    shot(page, "board")
    page.goto(f"{base}/convoys/{convoy.id}/")
    shot(page, "convoy")
    page.goto(f"{base}/rigs/{api.id}/")
    expect(page.locator("text=auth/views.py")).to_be_visible()
    shot(page, "rig")
    page.goto(f"{base}/repositories/{repository.id}/queue/")
    expect(page.locator(f"#mr-{mr.id}")).to_contain_text("merged")
    shot(page, "merge-queue")
    ctx_a.close()

    phone = browser.new_context(
        viewport={"width": 390, "height": 844}, storage_state=ctx_b.storage_state()
    )
    phone_page = phone.new_page()
    phone_page.goto(f"{base}/")
    expect(phone_page.locator("#live-indicator")).to_have_text("Live")
    width = phone_page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the board scrolls sideways at phone width ({width}px)"
    shot(phone_page, "board-phone")
    phone_page.goto(f"{base}/convoys/{convoy.id}/")
    width = phone_page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the convoy page scrolls sideways at phone width ({width}px)"
    shot(phone_page, "convoy-phone")
    phone.close()
    ctx_b.close()
    assert os.path.getsize(ARTIFACTS / "board.png") > 10_000


def test_the_cascade_feed_has_one_folding_card_per_merge(browser, asgi_server, operator):
    """The convoy page's cascade feed: one card per landed merge, the newest open; a card
    folds and unfolds, keeps the way it was left across a live refresh that adds a card, and
    the kind filter narrows the cards without a reload."""
    import threading
    import uuid
    from datetime import timedelta

    from django.utils import timezone
    from playwright.sync_api import expect

    from notifications.models import Notification
    from notifications.services import notification_send

    base = asgi_server
    repository = factories.repository(name="app")
    convoy = factories.convoy(repository=repository, title="Auth system")
    Convoy.objects.filter(pk=convoy.pk).update(created_at=timezone.now() - timedelta(hours=1))
    rigs = [
        factories.rig(repository=repository, slug=slug, state=Rig.State.WORKING)
        for slug in ("api", "web", "docs")
    ]
    for n, rig in enumerate(rigs):
        factories.leg(convoy=convoy, key=rig.slug, rig=rig, position=n)
    K, SEV = Notification.Kind, Notification.Severity

    def land(rig, minutes, told, cascade=None, depth=0):
        mr = factories.merge_request(
            rig=rig,
            state=MergeRequest.State.MERGED,
            changed_paths=[f"{rig.slug}/module_{minutes}.py"],
            finished_at=timezone.now() - timedelta(minutes=60 - minutes),
        )
        cascade = cascade or uuid.uuid4()
        with transaction.atomic():
            for other, kind, severity in told:
                notification_send(
                    rig=other,
                    kind=kind,
                    severity=severity,
                    summary=f"{kind} after merge request {mr.id}",
                    action="Rebase when convenient.",
                    source_rig=rig,
                    source_merge_request=mr,
                    cascade=cascade,
                    depth=depth,
                    convoy_id=convoy.id,
                )
        return mr

    def off_loop(work):
        """Run `work` in a thread of its own: the broadcast after a commit cannot run inside the
        event loop that Playwright's sync API keeps in this thread."""
        done = []

        def run():
            try:
                done.append(work())
            finally:
                connections.close_all()

        thread = threading.Thread(target=run)
        thread.start()
        thread.join(timeout=30)
        return done[0]

    api, web, docs = rigs
    first = uuid.uuid4()  # docs answers the first merge's notice: its cascade, one level deeper
    merges = off_loop(
        lambda: [
            land(
                api,
                10,
                [(web, K.BASE_MOVED, SEV.INFO), (docs, K.INTERFACE_CHANGED, SEV.WARNING)],
                cascade=first,
            ),
            land(docs, 20, [(api, K.BASE_MOVED, SEV.INFO)], cascade=first, depth=1),
            land(web, 30, [(api, K.DEPENDENCIES_CHANGED, SEV.WARNING)]),
        ]
    )

    ctx, page = log_in(browser, base, operator.username)
    page.goto(f"{base}/convoys/{convoy.id}/")
    expect(page.locator("#live-indicator")).to_have_text("Live")
    cards = page.locator("#feed-live .feed-card")
    expect(cards).to_have_count(3)  # one card per merge, newest first
    assert [int(cards.nth(i).get_attribute("data-merge-request")) for i in range(3)] == [
        mr.id for mr in reversed(merges)
    ]
    newest = page.locator(f"#feed-mr-{merges[2].id}")
    middle = page.locator(f"#feed-mr-{merges[1].id}")
    expect(newest).to_have_attribute("open", "")
    expect(newest.locator(".told")).to_be_visible()
    expect(middle.locator(".told")).to_be_hidden()  # the others are one line each
    expect(page.locator("#feed-other")).not_to_have_attribute("open", "")
    shot(page, "convoy-feed")

    # fold the newest, unfold the middle one
    newest.locator("summary").click()
    expect(newest.locator(".told")).to_be_hidden()
    middle.locator("summary").click()
    expect(middle.locator(".told")).to_be_visible()
    expect(middle).to_contain_text(f"base_moved after merge request {merges[1].id}")
    expect(middle).to_contain_text(
        f"Continues the cascade started by merge request #{merges[0].id}"
    )
    oldest = page.locator(f"#feed-mr-{merges[0].id}")
    oldest.locator("summary").click()
    tree = oldest.locator(".tree-node")
    expect(tree).to_have_count(2)  # the chain it started: depth 0, then depth 1 indented
    assert box_of(tree.nth(1))["x"] > box_of(tree.nth(0))["x"]
    shot(page, "convoy-feed-open")
    oldest.locator("summary").click()
    page.evaluate("window.__sameDocument = true")

    # another merge lands: the live refresh adds its card and keeps the others as they were
    latest = off_loop(lambda: land(api, 40, [(web, K.BASE_MOVED, SEV.INFO)]))
    expect(cards).to_have_count(4, timeout=10_000)
    expect(cards.first).to_have_attribute("data-merge-request", str(latest.id))
    expect(newest.locator(".told")).to_be_hidden()  # folded by hand: still folded
    expect(middle.locator(".told")).to_be_visible()  # unfolded by hand: still open
    assert page.evaluate("window.__sameDocument") is True

    # the kind filter narrows the cards in place and keeps the address in step
    page.select_option("#feed-filters select[name=feed_kind]", "dependencies_changed")
    expect(cards).to_have_count(1)
    expect(cards.first).to_have_attribute("data-merge-request", str(merges[2].id))
    assert "feed_kind=dependencies_changed" in page.url
    assert page.evaluate("window.__sameDocument") is True
    page.reload()
    expect(cards).to_have_count(1)
    ctx.close()
