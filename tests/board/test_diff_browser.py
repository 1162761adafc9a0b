"""Reviewing a three-file change in a real browser (Debian's Chromium, Playwright, the real ASGI
server), with the agent's side played by a real `gt` process: an operator opens the rig's diff,
unfolds context, switches to side by side, comments on a line; the agent reads it (`gt review`,
its inbox), answers and pushes a fix; the comment shows as outdated; the agent resolves it.
The page does not scroll sideways at 390 by 844. Screenshots land in test-artifacts/board/."""

import pytest
from django.contrib.auth.models import Group

from convoys.models import ReviewComment
from notifications.models import Notification
from rigs import services
from rigs.models import Rig
from rigs.permissions import OPERATOR_GROUP
from tests import factories
from tests.api.test_cli import gt, ok
from tests.board.browser import ARTIFACTS, CHROMIUM
from tests.board.conftest import PASSWORD
from tests.board.test_diff import PY
from tests.conftest import git as run_git
from tests.rigs.helpers import commit_file

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed"),
]


def no_sideways_scroll(page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    viewport = page.evaluate("window.innerWidth")
    assert width <= viewport, f"the page scrolls sideways: {width}px wide in {viewport}px"


def test_review_a_change_comment_and_see_it_outdated(
    chromium, asgi_server, django_user_model, tmp_path
):
    base = asgi_server
    user = django_user_model.objects.create_user("olga", password=PASSWORD)
    user.groups.add(Group.objects.get_or_create(name=OPERATOR_GROUP)[0])
    path = tmp_path / "app"
    path.mkdir()
    run_git(path, "init", "-q", "-b", "main")
    (path / "README.md").write_text("# app\n")
    commit_file(path, "app.py", PY, "initial")
    repository = factories.repository(name="app", path=str(path))
    agent, token = services.agent_create(name="ada")
    worktree = tmp_path / "worktrees" / "api"
    run_git(path, "worktree", "add", "-q", "-b", "rig/api", str(worktree), "main")
    rig = factories.rig(repository=repository, slug="api", agent=agent, branch="rig/api",
                        state=Rig.State.WORKING, worktree_path=str(worktree))  # fmt: skip
    (worktree / "README.md").write_text("# app\n\nGreets people.\n")
    (worktree / "style.css").write_text("body { color: red; }\n")
    commit_file(worktree, "app.py", PY.replace('"hello " + name', 'f"hello {name}!"'), "greet")

    context = chromium.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto(f"{base}/login/?next=/rigs/{rig.id}/diff/")
    page.fill("#id_username", "olga")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/rigs/{rig.id}/diff/")
    page.wait_for_selector("#live-indicator[data-state=live]")
    assert page.locator("#file-tree .tree-file").count() == 3
    app = page.locator("details.diff-file[data-path='app.py']")
    app.locator("table.diff-unified").wait_for()
    assert app.locator(".hl .k:has-text('def')").count() > 0  # highlighted on the server
    folded = app.locator("tbody.folded")
    hidden_before = folded.count()
    assert hidden_before >= 1
    app.locator("[data-unfold]").first.click()
    assert app.locator("tbody.folded[hidden]").count() == hidden_before - 1
    page.screenshot(path=str(ARTIFACTS / "diff-unified-1440.png"), full_page=True)

    # comment on the changed line (5)
    app.locator("button[data-comment][data-side=new][data-line='5']").click()
    form = app.locator("form.comment-form")
    form.locator("textarea").fill("Use a template here.")
    form.locator("button[type=submit]").click()
    page.wait_for_selector(".toast-success:has-text('sent to rig api')")
    comment = ReviewComment.objects.get()
    app.locator(f"#thread-{comment.id}").wait_for()
    assert comment.line == 5 and comment.path == "app.py" and "hello" in comment.excerpt

    # the agent: its inbox and gt review
    notice = Notification.objects.get(rig=rig, kind="review_comment")
    assert notice.changes["file"] == "app.py" and notice.changes["line"] == 5
    listed = ok(gt(base, token, "review", cwd=worktree))
    assert f"#{comment.id} app.py:5" in listed and "Use a template here." in listed
    assert "[warning review_comment] olga on app.py:5" in ok(gt(base, token, "inbox", cwd=worktree))
    assert "Open review comments" in ok(gt(base, token, "prime", cwd=worktree))
    ok(gt(base, token, "review", "reply", str(comment.id), "On it.", cwd=worktree))
    fixed = commit_file(worktree, "app.py", PY.replace('"hello " + name', '"hi " + name'), "fix")

    page.reload()
    app = page.locator("details.diff-file[data-path='app.py']")
    thread = app.locator(f"#thread-{comment.id}")
    thread.wait_for()
    assert thread.locator("[data-outdated]").count() == 1
    assert "On it." in thread.inner_text()

    # side by side
    page.click("[data-diff-view=split]")
    app.locator("table.diff-split").wait_for()
    page.screenshot(path=str(ARTIFACTS / "diff-split-1440.png"), full_page=True)

    resolved = ok(gt(base, token, "review", "resolve", str(comment.id), cwd=worktree))
    assert f"resolved review comment #{comment.id} in {fixed[:10]}" in resolved
    comment.refresh_from_db()
    notice.refresh_from_db()
    assert comment.state == "resolved" and notice.state == "resolved"

    # a phone
    phone = chromium.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    phone.set_default_timeout(15_000)
    mobile = phone.new_page()
    mobile.goto(f"{base}/login/?next=/rigs/{rig.id}/diff/")
    mobile.fill("#id_username", "olga")
    mobile.fill("#id_password", PASSWORD)
    mobile.click("button[type=submit]")
    mobile.wait_for_url(f"{base}/rigs/{rig.id}/diff/")
    mobile.locator("details.diff-file[data-path='app.py'] table.diff").wait_for()
    no_sideways_scroll(mobile)
    mobile.screenshot(path=str(ARTIFACTS / "diff-390.png"), full_page=True)
    phone.close()
    context.close()


def test_a_merge_request_waits_for_an_approval_on_the_diff_page(
    chromium, asgi_server, django_user_model, tmp_path
):
    """`review_required = 1`: the request waits; the operator approves it on its diff page;
    it gates and lands (the queue run here, in the test); the trail shows who approved what."""
    from convoys.services import rig_merge_request
    from rigs import git, merge_queue
    from rigs.models import MergeRequest, Repository

    base = asgi_server
    user = django_user_model.objects.create_user("olga", password=PASSWORD)
    user.groups.add(Group.objects.get_or_create(name=OPERATOR_GROUP)[0])
    path = tmp_path / "app"
    path.mkdir()
    run_git(path, "init", "-q", "-b", "main")
    commit_file(path, "app.py", PY, "initial")
    repository = factories.repository(name="app", path=str(path), review_required=1)
    worktree = tmp_path / "worktrees" / "api"
    run_git(path, "worktree", "add", "-q", "-b", "rig/api", str(worktree), "main")
    rig = factories.rig(repository=repository, slug="api", branch="rig/api",
                        state=Rig.State.WORKING, worktree_path=str(worktree))  # fmt: skip
    head = commit_file(worktree, "app.py", PY.replace('"hello " + name', '"hi " + name'), "hi")
    Rig.objects.filter(pk=rig.pk).update(head_commit=head)
    rig.refresh_from_db()
    mr = rig_merge_request(rig=rig, force=True)
    assert mr.state == MergeRequest.State.AWAITING_REVIEW

    context = chromium.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto(f"{base}/login/?next=/rigs/{rig.id}/diff/")
    page.fill("#id_username", "olga")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/rigs/{rig.id}/diff/")
    page.click("#awaiting-review a")
    page.wait_for_url(f"{base}/merge-requests/{mr.id}/diff/")
    assert "Awaiting review" in page.inner_text("#review-panel")
    page.screenshot(path=str(ARTIFACTS / "review-awaiting-1440.png"), full_page=True)
    page.click("#approve")
    page.wait_for_selector(".toast-success:has-text('queued for gating')")
    assert page.query_selector("#approve") is None  # the page shows the request as it is now
    mr.refresh_from_db()
    assert mr.state == MergeRequest.State.QUEUED
    merge_queue.merge_queue_process(repository.id, "main")
    mr.refresh_from_db()
    assert mr.state == MergeRequest.State.MERGED
    assert git.is_ancestor(str(path), head, "main")
    page.reload()
    assert "olga approved" in page.inner_text("#review-audit")
    assert Repository.objects.get(pk=repository.pk).review_required == 1
    context.close()
