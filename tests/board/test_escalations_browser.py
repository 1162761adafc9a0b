"""An escalation in a real browser (Debian's Chromium, Playwright, the real ASGI server), asked
by a real `gt` process from the agent's worktree: the board's header counts it live (no
reload), the convoy page and the rig page show it, an operator answers it in the rig page's
form, and the answer is in the agent's inbox (`gt inbox`). Screenshots land in
test-artifacts/board/."""

import pytest
from django.contrib.auth.models import Group

from convoys.models import Convoy, Leg
from notifications.models import Notification
from rigs import services
from rigs.models import Rig
from rigs.permissions import OPERATOR_GROUP
from tests import factories
from tests.api.test_cli import gt, ok
from tests.board.browser import ARTIFACTS, CHROMIUM
from tests.board.conftest import PASSWORD

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed"),
]


def test_an_escalation_shows_on_the_board_and_is_answered(
    chromium, asgi_server, django_user_model, tmp_path
):
    base = asgi_server
    user = django_user_model.objects.create_user("olga", password=PASSWORD)
    user.groups.add(Group.objects.get_or_create(name=OPERATOR_GROUP)[0])
    repository = factories.repository(name="app")
    agent, token = services.agent_create(name="ada")
    worktree = tmp_path / "worktrees" / "app" / "api"
    worktree.mkdir(parents=True)
    rig = factories.rig(repository=repository, slug="api", agent=agent, state=Rig.State.WORKING,
                        worktree_path=str(worktree))  # fmt: skip
    convoy = factories.convoy(repository=repository, title="Auth", slug="auth",
                              state=Convoy.State.LAUNCHED)  # fmt: skip
    factories.leg(convoy=convoy, key="api", rig=rig, state=Leg.State.WORKING)
    bead = factories.bead(rig=rig, title="Token format")

    context = chromium.new_context(viewport={"width": 1280, "height": 1000})
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto(f"{base}/")
    page.fill("#id_username", "olga")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")
    page.wait_for_selector("#live-indicator[data-state=live]")
    assert page.locator("[data-escalations-count]").count() == 0

    # the agent asks, from its worktree (no GT_RIG)
    asked = ok(gt(base, token, "escalate", "JWT or opaque tokens?", "--bead", bead.short_id,
                  cwd=worktree))  # fmt: skip
    assert "escalated as #" in asked
    question = Notification.objects.get(rig=rig, kind="escalation")
    # the header counts it without a reload
    page.wait_for_selector("[data-escalations-count]:has-text('1')")
    page.locator("header.topbar").screenshot(path=str(ARTIFACTS / "escalation-header.png"))

    page.goto(f"{base}/convoys/{convoy.id}/")
    page.wait_for_selector(f"#convoy-questions #question-{question.id}")
    assert "JWT or opaque tokens?" in page.inner_text("#convoy-questions")

    page.click("#escalations-link")
    page.wait_for_url(f"{base}/escalations/")
    page.wait_for_selector(f"#question-{question.id}")
    page.screenshot(path=str(ARTIFACTS / "escalations-page.png"), full_page=True)

    page.goto(f"{base}/rigs/{rig.id}/")
    page.wait_for_selector("#live-indicator[data-state=live]")
    card = page.locator(f"#questions #question-{question.id}")
    assert bead.short_id in card.inner_text()
    card.locator("textarea").fill("Opaque: we revoke them server-side.")
    card.locator("button").click()
    page.wait_for_selector(".toast-success:has-text('Answered')")
    page.wait_for_selector(f"#questions #question-{question.id}", state="detached")
    page.wait_for_selector("#escalations-link:not(:has([data-escalations-count]))")
    page.screenshot(path=str(ARTIFACTS / "escalation-answered.png"), full_page=True)
    question.refresh_from_db()
    assert question.state == "resolved" and "olga" in question.resolution

    inbox = ok(gt(base, token, "inbox", cwd=worktree))
    assert f"(re #{question.id}) olga answered #{question.id}: Opaque" in inbox
    context.close()
