"""A convoy from a Markdown plan (`POST convoys/import/`): a plan with every feature makes the
same convoy as the equivalent API calls; a broken plan lists every error with its line and
creates nothing. Also a leg's description and acceptance checklist through `POST convoys/`."""

import pytest

from convoys.models import Bead, Convoy, Leg
from convoys.services.plans import CLOSED_REASON
from events.models import Event
from rigs.models import Rig
from tests import factories
from tests.api.conftest import error_of

pytestmark = pytest.mark.django_db

PLAN = """# Build the authentication system

Users sign up, log in and out.
Tokens expire after a day.

## db — Database schema
Rig: rig-db
Scope: migrations/**, src/models/**
Watch: src/shared/**
Acceptance:
- the users table has a unique email
- the migration is reversible

Create the users and tokens tables.

- [ ] Write the users migration
  with a unique index on email
- [x] Sketch the schema

## api - API endpoints
**Depends on:** `db`
Agent: bot
Scope: src/api/**
Acceptance: login returns a token; logout revokes it

Endpoints for login and logout:

```python
# a comment, not a title
def login(): ...
```

- [ ] Login endpoint
- [ ] Logout endpoint

## docs: Documentation
Depends on: api, db
Rig: rig-docs
Watch: src/api/**
- [ ] Write the API guide
"""

# The same convoy, as `POST convoys/` then `POST beads/` (and a close) would make it.
LEGS = [
    {
        "key": "db",
        "title": "Database schema",
        "description": "Create the users and tokens tables.",
        "acceptance": ["the users table has a unique email", "the migration is reversible"],
        "scope": ["migrations/**", "src/models/**"],
        "watch": ["src/shared/**"],
        "depends_on": [],
    },
    {
        "key": "api",
        "title": "API endpoints",
        "description": "Endpoints for login and logout:\n\n```python\n# a comment, not a title\n"
        "def login(): ...\n```",
        "acceptance": ["login returns a token", "logout revokes it"],
        "scope": ["src/api/**"],
        "watch": [],
        "depends_on": ["db"],
        "agent": "bot",
    },
    {
        "key": "docs",
        "title": "Documentation",
        "description": "",
        "acceptance": [],
        "scope": [],
        "watch": ["src/api/**"],
        "depends_on": ["api", "db"],
    },
]
BEADS = [  # (leg, title, description, closed)
    ("db", "Write the users migration", "with a unique index on email", False),
    ("db", "Sketch the schema", "", True),
    ("api", "Login endpoint", "", False),
    ("api", "Logout endpoint", "", False),
    ("docs", "Write the API guide", "", False),
]


@pytest.fixture
def repo():
    repository = factories.repository()
    for slug in ("rig-db", "rig-docs"):
        factories.rig(repository=repository, slug=slug, state=Rig.State.READY)
    factories.agent(name="bot")
    return repository


def snapshot(convoy: Convoy) -> dict:
    """Everything a convoy is made of, without its ids and slug."""
    legs = convoy.legs.select_related("rig", "agent").order_by("position")
    return {
        "convoy": (convoy.title, convoy.description, convoy.repository_id, convoy.state),
        "legs": [
            (
                leg.position,
                leg.key,
                leg.title,
                leg.description,
                leg.acceptance,
                leg.rig.slug if leg.rig else None,
                leg.agent.name if leg.agent else None,
                leg.scope,
                leg.watch,
                sorted(d.key for d in leg.depends_on.all()),
                leg.state,
            )
            for leg in legs
        ],
        "beads": [
            (
                bead.leg.key,
                bead.rig.slug if bead.rig else None,
                bead.convoy_id == convoy.id,
                bead.title,
                bead.description,
                bead.status,
                bead.close_reason,
            )
            for bead in Bead.objects.filter(leg__convoy=convoy)
            .select_related("leg", "rig")
            .order_by("id")
        ],
    }


def by_api_calls(client, repo) -> Convoy:
    rigs = {r.slug: r.id for r in Rig.objects.filter(repository=repo)}
    legs = [dict(leg) for leg in LEGS]
    legs[0]["rig"], legs[2]["rig"] = rigs["rig-db"], rigs["rig-docs"]
    body = {
        "title": "Build the authentication system",
        "description": "Users sign up, log in and out.\nTokens expire after a day.",
        "repository": repo.id,
        "legs": legs,
    }
    response = client.post("/api/v1/convoys/", body, format="json")
    assert response.status_code == 201, response.json()
    convoy = Convoy.objects.get(pk=response.json()["id"])
    leg_ids = dict(convoy.legs.values_list("key", "id"))
    for leg, title, description, closed in BEADS:
        made = client.post(
            "/api/v1/beads/",
            {"title": title, "leg": leg_ids[leg], "description": description},
            format="json",
        )
        assert made.status_code == 201, made.json()
        if closed:
            done = client.post(
                f"/api/v1/beads/{made.json()['id']}/close/",
                {"reason": CLOSED_REASON},
                format="json",
            )
            assert done.status_code == 200, done.json()
    return convoy


def test_a_plan_imports_to_the_same_convoy_as_the_api_calls(operator, repo):
    response = operator.post(
        "/api/v1/convoys/import/", {"repository": repo.id, "plan": PLAN}, format="json"
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["state"] == "draft"
    assert [(leg["key"], leg["depends_on"], leg["wave"]) for leg in body["legs"]] == [
        ("db", [], 1),
        ("api", ["db"], 2),
        ("docs", ["db", "api"], 3),  # in the legs' order
    ]
    assert body["legs"][0]["acceptance"] == LEGS[0]["acceptance"]
    assert body["legs"][1]["description"] == LEGS[1]["description"]
    assert [(b["title"], b["status"]) for b in body["beads"]] == [
        (title, "closed" if closed else "open") for _, title, _, closed in BEADS
    ]
    imported = Convoy.objects.get(pk=body["id"])
    made = by_api_calls(operator, repo)
    assert snapshot(imported) == snapshot(made)
    # the rigged legs' beads are in their rigs; the agent's leg's wait in the convoy's pool
    beads = snapshot(imported)["beads"]
    assert beads[0][:3] == ("db", "rig-db", False) and beads[2][:3] == ("api", None, True)


def test_an_imported_plan_can_be_launched_at_once(operator, repo):
    plan = "# Launch me\n\n## db — Schema\nRig: rig-db\n- [ ] Migrate\n"
    response = operator.post(
        "/api/v1/convoys/import/",
        {"repository": repo.id, "plan": plan, "launch": True},
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert response.json()["state"] == "launched"
    assert response.json()["legs"][0]["state"] == "ready"
    assert response.json()["beads"][0]["rig"] == Rig.objects.get(slug="rig-db").id


BROKEN = """Some text before the title
# Broken plan

- [ ] a task outside any leg
## api — API
Depends on: db, ghost
Rig: nowhere
Scope: /etc/**
## db — Schema
Depends on: api
Agent: bot
## db — Again
Agent: bot
Acceptance:

## lonely
Agent: bot
## Bad Key — Title
Agent: ghost-agent
- [ ]
"""


def test_a_broken_plan_lists_every_error_with_its_line_and_creates_nothing(operator, repo):
    events = Event.objects.count()
    response = operator.post(
        "/api/v1/convoys/import/", {"repository": repo.id, "plan": BROKEN}, format="json"
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_plan" and error["field"] == "plan"
    found = [(e["line"], e["message"]) for e in error["errors"]]
    expected = [
        (1, "the plan starts with its `# title` line"),
        (4, "a task (`- [ ]`) belongs in a leg's `##` section"),
        (6, "unknown leg 'ghost'"),
        (7, "unknown rig 'nowhere' in repository"),
        (8, "'/etc/**' is not a valid path glob"),
        (10, "dependency cycle: api -> db -> api"),
        (12, "duplicate key 'db' (also the leg on line 9)"),
        (14, "`Acceptance:` needs `- ` items"),
        (16, "leg `lonely` has no title"),
        (18, "a leg heading is `## key — title`"),
        (19, "unknown agent 'ghost-agent'"),
        (20, "a task needs a title"),
    ]
    assert [line for line, _ in found] == [line for line, _ in expected], found
    for (_, message), (_, fragment) in zip(found, expected, strict=True):
        assert fragment in message, (fragment, message)
    # the message lists them too, one a line
    assert error["message"].startswith("the plan has 12 errors; nothing was created.")
    assert "line 7: leg api: unknown rig 'nowhere'" in error["message"]
    assert not Convoy.objects.exists() and not Leg.objects.exists() and not Bead.objects.exists()
    assert Event.objects.count() == events


@pytest.mark.parametrize(
    ("plan", "line", "fragment"),
    [
        ("", 1, "the plan is empty"),
        ("\n\n   \n", 1, "the plan is empty"),
        ("## api — API\nAgent: bot\n", 1, "the plan starts with its `# title` line"),
        ("# Title only\n\nSome description.\n", 1, "the plan has no legs"),
        ("#\n## api — API\nAgent: bot\n", 1, "the `#` title line needs the convoy's title"),
        ("# A\n# B\n## api — API\nAgent: bot\n", 2, "a plan has one `#` title (line 1)"),
        ("# A\n## api — API\nRig: rig-db\nRig: rig-docs\n", 4, "`Rig:` given twice (line 3)"),
        ("# A\n## api — API\n", 2, "a leg needs a rig, or an agent"),
        ("# A\n## API — Endpoints\nAgent: bot\n", 2, "'API' is not a valid slug"),
        ("# A\n## api — API\nRig: rig-db\nAgent: bot\n", 4, "either a rig or an agent"),
        ("# A\n## api — API\nAgent: bot\nScope: src/[abc\n", 4, "'[' without its ']'"),
        ("# A\n## api — API\nAgent: bot\nbinary\x00here\n", 4, "contains a NUL character"),
        ("# A\n## api — API\nAgent: bot\nAcceptance: " + "x" * 301, 4, "at most 300 characters"),
        ("# A\n## api — API\nAgent: bot\nDepends on: api\n", 4, "dependency cycle: api -> api"),
    ],
)
def test_each_kind_of_error_has_its_line(operator, repo, plan, line, fragment):
    response = operator.post(
        "/api/v1/convoys/import/", {"repository": repo.id, "plan": plan}, format="json"
    )
    assert response.status_code == 400, response.json()
    errors = response.json()["error"]["errors"]
    assert (errors[0]["line"], fragment in errors[0]["message"]) == (line, True), errors
    assert not Convoy.objects.exists()


def test_a_plan_with_hundreds_of_errors_shows_the_first_hundred_and_counts_all(operator, repo):
    plan = "# A\n" + "".join(f"## k{i}\n" for i in range(150))  # two errors a leg
    response = operator.post(
        "/api/v1/convoys/import/", {"repository": repo.id, "plan": plan}, format="json"
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["count"] == 300 and len(error["errors"]) == 100
    assert error["message"].startswith("the plan has 300 errors")
    assert error["message"].endswith("… and 200 more (the first 100 are shown).")
    assert not Convoy.objects.exists()


def test_import_input_and_roles(operator, viewer, make_agent, repo):
    url = "/api/v1/convoys/import/"
    plan = "# A\n## api — API\nAgent: bot\n"
    assert viewer.post(url, {"repository": repo.id, "plan": plan}, format="json").status_code == 403
    _, agent = make_agent("agent-x")
    assert agent.post(url, {"repository": repo.id, "plan": plan}, format="json").status_code == 403
    missing = operator.post(url, {"repository": 424242, "plan": plan}, format="json")
    assert missing.status_code == 400 and error_of(missing)["field"] == "repository"
    no_plan = operator.post(url, {"repository": repo.id}, format="json")
    assert no_plan.status_code == 400 and error_of(no_plan)["field"] == "plan"
    assert not Convoy.objects.exists()


def test_a_failed_launch_creates_nothing_either(operator, repo):
    rig = Rig.objects.get(slug="rig-db")
    rig.state = Rig.State.FAILED  # a dead rig cannot take a leg: refused before any write
    rig.save()
    plan = "# A\n## db — Schema\nRig: rig-db\n"
    response = operator.post(
        "/api/v1/convoys/import/", {"repository": repo.id, "plan": plan}, format="json"
    )
    assert response.status_code == 400
    assert "rig rig-db is failed" in response.json()["error"]["errors"][0]["message"]
    assert not Convoy.objects.exists()


def test_the_import_is_in_the_openapi_schema(operator):
    schema = operator.get("/api/schema/?format=json").json()
    operation = schema["paths"]["/api/v1/convoys/import/"]["post"]
    assert set(operation["responses"]) >= {"201", "400", "403", "413"}
    assert "ConvoyImportError" in str(operation["responses"]["400"])
    detail = schema["components"]["schemas"]["ConvoyImportErrorDetail"]
    assert "errors" in detail["required"]  # (every error body lists its errors)
    assert "line" in schema["components"]["schemas"]["PlanError"]["properties"]


# --- a leg's description and acceptance through POST convoys/ ---------------------------------


def test_create_takes_each_legs_description_and_acceptance(operator, repo):
    rig = Rig.objects.get(slug="rig-db")
    legs = [
        {
            "key": "db",
            "title": "Schema",
            "rig": rig.id,
            "description": "Create the tables.",
            "acceptance": ["  unique email ", "reversible"],
        }
    ]
    body = {"title": "A", "repository": repo.id, "legs": legs}
    response = operator.post("/api/v1/convoys/", body, format="json")
    assert response.status_code == 201, response.json()
    leg = response.json()["legs"][0]
    assert leg["description"] == "Create the tables."
    assert leg["acceptance"] == ["unique email", "reversible"]
    shown = operator.get(f"/api/v1/convoys/{response.json()['id']}/").json()["legs"][0]
    assert shown["acceptance"] == ["unique email", "reversible"]


@pytest.mark.parametrize(
    ("acceptance", "fragment"),
    [
        (["x"] * 31, "no more than 30"),
        (["x" * 301], "no more than 300"),
        ([""], "may not be blank"),
        ("one string", "list"),
    ],
)
def test_bad_acceptance_is_a_400_naming_the_field(operator, repo, acceptance, fragment):
    leg = {"key": "db", "title": "Schema", "agent": "bot", "acceptance": acceptance}
    body = {"title": "A", "repository": repo.id, "legs": [leg]}
    response = operator.post("/api/v1/convoys/", body, format="json")
    assert response.status_code == 400
    error = error_of(response)
    assert error["field"].startswith("legs[0].acceptance") and fragment in error["message"], error
    assert not Convoy.objects.exists()
