"""The New convoy page: a leg's description and acceptance checklist, and a convoy imported from
a Markdown plan (uploaded or pasted). Django's test client; no browser."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from convoys.models import Bead, Convoy
from rigs.models import Rig
from tests import factories

pytestmark = pytest.mark.django_db

PLAN = """# Auth system

Sign up, log in, log out.

## api — API endpoints
Rig: api
Scope: src/api/**
Acceptance:
- login returns a token
- logout revokes it

Build the endpoints.

- [ ] Login endpoint
- [x] Sketch the routes

## docs - Docs
Depends on: api
Agent: bob
- [ ] Write the guide
"""


@pytest.fixture
def repo():
    repository = factories.repository(name="app")
    factories.rig(repository=repository, slug="api", state=Rig.State.READY)
    factories.agent(name="bob")
    return repository


def test_the_form_takes_a_description_and_an_acceptance_checklist(operator_client, repo):
    rig = Rig.objects.get(slug="api")
    data = {
        "title": "Auth",
        "repository": str(repo.id),
        "leg_key": ["api", ""],
        "leg_title": ["API endpoints", ""],
        "leg_assignee": [f"rig:{rig.id}", ""],
        "leg_depends_on": ["", ""],
        "leg_description": ["Build the login API.", ""],
        "leg_acceptance": ["login returns a token\r\n\r\n  logout revokes it  \r\n", ""],
    }
    response = operator_client.post("/convoys/new/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    leg = Convoy.objects.get(title="Auth").legs.get()
    assert leg.description == "Build the login API."
    assert leg.acceptance == ["login returns a token", "logout revokes it"]
    # the convoy page's leg detail shows the brief
    page = operator_client.get(response["Location"]).content.decode()
    assert 'id="leg-brief-' in page and "2 acceptance items" in page
    assert "Build the login API." in page and "<li>logout revokes it</li>" in page


def test_a_bad_acceptance_item_is_shown_on_its_row(operator_client, repo):
    data = {
        "title": "Auth",
        "repository": str(repo.id),
        "leg_key": ["api"],
        "leg_title": ["API"],
        "leg_assignee": ["agent:bob"],
        "leg_depends_on": [""],
        "leg_description": [""],
        "leg_acceptance": ["x" * 301],
    }
    response = operator_client.post("/convoys/new/", data)
    assert response.status_code == 400
    row = response.content.decode().split("data-leg-row")[1]
    assert "at most 300 characters" in row and "x" * 301 in row  # what was typed stays
    assert not Convoy.objects.exists()


def test_the_new_convoy_page_offers_the_import(operator_client, repo):
    page = operator_client.get("/convoys/new/").content.decode()
    assert 'action="/convoys/import/"' in page and 'enctype="multipart/form-data"' in page
    assert 'name="plan_file"' in page and 'name="plan"' in page and 'name="leg_acceptance"' in page


def test_upload_a_plan(operator_client, repo):
    upload = SimpleUploadedFile("plan.md", PLAN.encode(), content_type="text/markdown")
    response = operator_client.post(
        "/convoys/import/", {"repository": str(repo.id), "plan_file": upload}, follow=True
    )
    convoy = Convoy.objects.get(title="Auth system")
    assert response.redirect_chain[-1][0] == f"/convoys/{convoy.id}/"
    assert "imported as a draft: 2 legs, 3 beads" in response.content.decode()
    api, docs = convoy.legs.order_by("position")
    assert api.acceptance == ["login returns a token", "logout revokes it"]
    assert api.description == "Build the endpoints." and api.scope == ["src/api/**"]
    assert [d.key for d in docs.depends_on.all()] == ["api"] and docs.agent.name == "bob"
    beads = list(Bead.objects.filter(leg__convoy=convoy).order_by("id"))
    assert [(b.leg.key, b.title, b.status) for b in beads] == [
        ("api", "Login endpoint", "open"),
        ("api", "Sketch the routes", "closed"),
        ("docs", "Write the guide", "open"),
    ]
    assert beads[0].rig.slug == "api" and beads[2].rig is None  # docs: its rig comes at launch


def test_paste_and_launch(operator_client, repo):
    plan = "# Quick\n\n## api — API\nRig: api\n- [ ] Do it\n"
    data = {"repository": str(repo.id), "plan": plan, "launch": "1"}
    response = operator_client.post("/convoys/import/", data)
    convoy = Convoy.objects.get(title="Quick")
    assert response.status_code == 302 and convoy.state == Convoy.State.LAUNCHED


def test_a_broken_plan_lists_its_errors_by_line_and_creates_nothing(operator_client, repo):
    plan = "# Broken\n## api — API\nRig: nowhere\nDepends on: ghost\n## api — Again\nAgent: bob\n"
    response = operator_client.post("/convoys/import/", {"repository": str(repo.id), "plan": plan})
    assert response.status_code == 400
    html = response.content.decode()
    assert "The plan was not imported: 3 errors." in html
    errors = html.split('id="plan-errors"')[1].split("</ul>")[0]
    assert '<span class="plan-line">line 3</span>: leg api: unknown rig' in errors
    assert '<span class="plan-line">line 4</span>: leg api: unknown leg' in errors
    assert '<span class="plan-line">line 5</span>: leg api: duplicate key' in errors
    # the pasted plan stays, to be fixed (after the newline a browser drops)
    assert 'id="id_plan"' in html and f">\n{plan}</textarea>" in html
    assert not Convoy.objects.exists() and not Bead.objects.exists()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"plan": ""}, "plan: upload a plan file, or paste the plan"),
        ({"plan_file": SimpleUploadedFile("p.md", b"\xff\xfe# T")}, "not UTF-8 text"),
        ({"repository": "", "plan": PLAN}, "repository: choose a repository"),
        ({"repository": "²", "plan": PLAN}, "repository:"),
    ],
)
def test_import_input_errors(operator_client, repo, data, message):
    response = operator_client.post("/convoys/import/", {"repository": str(repo.id), **data})
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Convoy.objects.exists()


def test_only_operators_import(viewer_client, repo):
    response = viewer_client.post("/convoys/import/", {"repository": str(repo.id), "plan": PLAN})
    assert response.status_code == 403 and not Convoy.objects.exists()
    assert viewer_client.get("/convoys/import/").status_code == 405
