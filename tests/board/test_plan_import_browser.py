"""The New convoy page in a real browser (Debian's Chromium, Playwright, the real ASGI server):
"Add a leg" clones a row with its description and acceptance boxes empty; a pasted plan with
errors shows them by line and keeps the text; the fixed plan imports, and the convoy page shows
each leg's brief. Screenshots land in test-artifacts/board/."""

import pytest
from django.contrib.auth.models import Group

from convoys.models import Convoy
from rigs.models import Rig
from rigs.permissions import OPERATOR_GROUP
from tests import factories
from tests.board.browser import ARTIFACTS, CHROMIUM, chromium_launched
from tests.board.conftest import PASSWORD

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed"),
]

BROKEN = "# Auth\n\n## api — API\nRig: nowhere\nDepends on: ghost\n- [ ] Login\n"
FIXED = (
    "# Auth\n\n## api — API\nRig: api\nAcceptance:\n- login returns a token\n\n"
    "Build the endpoints.\n- [ ] Login\n"
)


@pytest.fixture
def page(asgi_server, monkeypatch, django_user_model):
    user = django_user_model.objects.create_user("olga", password=PASSWORD)
    user.groups.add(Group.objects.get_or_create(name=OPERATOR_GROUP)[0])
    repository = factories.repository(name="app")
    factories.rig(repository=repository, slug="api", state=Rig.State.READY)
    with chromium_launched(monkeypatch) as chromium:
        context = chromium.new_context(viewport={"width": 1280, "height": 1000})
        context.set_default_timeout(15_000)
        tab = context.new_page()
        tab.goto(f"{asgi_server}/convoys/new/")
        tab.fill("#id_username", "olga")
        tab.fill("#id_password", PASSWORD)
        tab.click("button[type=submit]")
        tab.wait_for_url(f"{asgi_server}/convoys/new/")
        tab.base = asgi_server
        tab.repository = repository
        yield tab


def test_add_a_leg_and_import_a_plan_in_the_browser(page):
    page.fill("#leg-description-5", "typed")
    page.fill("#leg-acceptance-5", "an item")
    page.click("#add-leg")
    assert page.locator("[data-leg-row]").count() == 6
    assert (
        page.input_value("#leg-description-6") == "" and page.input_value("#leg-acceptance-6") == ""
    )
    assert page.locator("label[for=leg-acceptance-6]").inner_text().startswith("Leg 6 acceptance")
    page.locator(".legs-fieldset").screenshot(path=str(ARTIFACTS / "leg-rows.png"))

    page.select_option("#id_import_repository", str(page.repository.id))
    page.fill("#id_plan", BROKEN)
    page.click("text=Import the plan")
    page.wait_for_selector("#plan-errors")
    errors = page.inner_text("#plan-errors")
    assert "2 errors" in errors and "line 4: leg api: unknown rig 'nowhere'" in errors
    assert "line 5: leg api: unknown leg 'ghost'" in errors
    assert page.input_value("#id_plan") == BROKEN  # kept as typed, line numbers intact
    page.locator("#import").screenshot(path=str(ARTIFACTS / "plan-import-errors.png"))
    assert not Convoy.objects.exists()

    page.fill("#id_plan", FIXED)
    page.click("text=Import the plan")
    page.wait_for_url(f"{page.base}/convoys/*/")
    assert "imported as a draft: 1 leg, 1 bead." in page.content()
    page.click("#legs-h ~ .table-wrap details.leg-brief summary")
    brief = page.inner_text(".leg-brief")
    assert "Build the endpoints." in brief and "login returns a token" in brief
    page.screenshot(path=str(ARTIFACTS / "plan-imported.png"), full_page=True)
