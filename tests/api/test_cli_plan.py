"""`gt convoy create --leg-description/--leg-acceptance` and `gt convoy import PLAN`, end to
end: `bin/gt` as a subprocess (standard library only) against the real ASGI server."""

import json

import pytest
from django.contrib.auth.models import Group

from convoys.models import Bead, Convoy
from rigs import services
from rigs.models import ApiToken, Rig
from tests import factories
from tests.api.test_cli import as_json, gt, ok
from tests.rigs.helpers import register

pytestmark = [pytest.mark.django_db(transaction=True)]

PLAN = """# Build auth

Sign up, log in, log out.

## db — Schema
Rig: r-db
Scope: migrations/**
Acceptance:
- the users table has a unique email

Create the tables.

- [ ] Write the migration
- [x] Sketch the schema

## api - Endpoints
Depends on: db
Agent: cli-bot
Acceptance: login returns a token; logout revokes it
- [ ] Login endpoint
"""


@pytest.fixture
def setup(asgi_server, git_repo, django_user_model):
    repository = register(git_repo)
    agent, agent_token = services.agent_create(name="cli-bot")
    rig = Rig.objects.create(
        repository=repository, slug="r-db", agent=agent, branch="rig/r-db", state=Rig.State.READY
    )
    person = django_user_model.objects.create_user("ada", password="pw-123456789")
    person.groups.add(Group.objects.get_or_create(name="operator")[0])
    api_token = ApiToken(user=person)
    personal = api_token.issue()
    api_token.save()
    return asgi_server, repository, rig, personal, agent_token


def test_create_with_leg_descriptions_and_acceptance(setup):
    url, repository, rig, personal, _ = setup
    created = as_json(
        gt(url, personal, "convoy", "create", "Build auth", "--repository", str(repository.id),
           "--leg", "db", "Schema", str(rig.id), "--leg", "api", "Endpoints", "cli-bot",
           "--leg-description", "db:Create the tables.",
           "--leg-description", "db:Then the indexes.",
           "--leg-acceptance", "db:unique email",
           "--leg-acceptance", "db:the migration is reversible",
           "--leg-acceptance", "api:login: returns a token",
           "--dep", "api:db", "--json")
    )  # fmt: skip
    db, api = created["legs"]
    assert db["description"] == "Create the tables.\nThen the indexes."
    assert db["acceptance"] == ["unique email", "the migration is reversible"]
    assert api["acceptance"] == ["login: returns a token"] and api["description"] == ""
    bad = gt(url, personal, "convoy", "create", "X", "--repository", str(repository.id),
             "--leg", "db", "Schema", str(rig.id), "--leg-acceptance", "nope:text")  # fmt: skip
    assert bad.returncode == 2 and "--leg-acceptance nope:text" in bad.stderr
    # a rig by its slug (rig:SLUG), an agent by agent:NAME
    by_slug = as_json(
        gt(url, personal, "convoy", "create", "By slug", "--repository", str(repository.id),
           "--leg", "db", "Schema", "rig:r-db", "--leg", "api", "Endpoints", "agent:cli-bot",
           "--json")
    )  # fmt: skip
    assert [leg["rig"] for leg in by_slug["legs"]] == [rig.id, None]
    assert Convoy.objects.get(pk=by_slug["id"]).legs.get(key="api").agent.name == "cli-bot"
    unknown = gt(url, personal, "convoy", "create", "X", "--repository", str(repository.id),
                 "--leg", "db", "Schema", "rig:nope")  # fmt: skip
    assert unknown.returncode == 2 and "no rig 'nope' on repository" in unknown.stderr


def test_import_a_plan_file(setup, tmp_path):
    url, repository, rig, personal, agent_token = setup
    plan = tmp_path / "plan.md"
    plan.write_text(PLAN)
    # no --repository: the server has one
    out = ok(gt(url, personal, "convoy", "import", str(plan)))
    assert "'Build auth' [draft]" in out and "wave 2 api" in out
    assert "3 bead(s) from the plan's tasks (1 closed)" in out
    convoy = Convoy.objects.get()
    db, api = convoy.legs.order_by("position")
    assert (db.rig_id, db.scope, db.description) == (
        rig.id,
        ["migrations/**"],
        "Create the tables.",
    )
    assert db.acceptance == ["the users table has a unique email"]
    assert api.agent.name == "cli-bot" and [d.key for d in api.depends_on.all()] == ["db"]
    assert api.acceptance == ["login returns a token", "logout revokes it"]
    assert sorted(Bead.objects.values_list("title", "status")) == [
        ("Login endpoint", "open"),
        ("Sketch the schema", "closed"),
        ("Write the migration", "open"),
    ]
    # --json, --launch and an explicit repository; an agent may not import
    plan.write_text("# Second\n\n## only — Only leg\nAgent: cli-bot\n- [ ] Task\n")
    launched = as_json(
        gt(url, personal, "convoy", "import", str(plan), "--repository", str(repository.id),
           "--launch", "--json")
    )  # fmt: skip
    assert launched["state"] == "launched" and launched["beads"][0]["title"] == "Task"
    assert gt(url, agent_token, "convoy", "import", str(plan)).returncode == 3


def test_a_broken_plan_lists_every_error_and_creates_nothing(setup, tmp_path):
    url, _, _, personal, _ = setup
    plan = tmp_path / "broken.md"
    plan.write_text(
        "# Broken\n\n## api — API\nDepends on: ghost\nRig: nowhere\n## api — Again\nAgent: x\n"
    )
    result = gt(url, personal, "convoy", "import", str(plan))
    assert result.returncode == 2, result.stderr
    assert "the plan has 4 error(s); nothing was created." in result.stderr
    for line in (
        f"{plan}:4: leg api: unknown leg 'ghost'",
        f"{plan}:5: leg api: unknown rig 'nowhere'",
        f"{plan}:6: leg api: duplicate key 'api'",
        f"{plan}:7: leg api: unknown agent 'x'",
    ):
        assert line in result.stderr, result.stderr
    as_error = json.loads(gt(url, personal, "--json", "convoy", "import", str(plan)).stderr)
    assert as_error["exit_code"] == 2 and as_error["error"]["code"] == "invalid_plan"
    assert [e["line"] for e in as_error["error"]["errors"]] == [4, 5, 6, 7]
    missing = gt(url, personal, "convoy", "import", str(tmp_path / "nope.md"))
    assert missing.returncode == 2 and "cannot read the plan" in missing.stderr
    assert not Convoy.objects.exists() and not Bead.objects.exists()


def test_import_asks_which_repository_when_there_are_several(setup, tmp_path):
    url, repository, _, personal, _ = setup
    factories.repository(name="second")
    plan = tmp_path / "plan.md"
    plan.write_text(PLAN)
    result = gt(url, personal, "convoy", "import", str(plan))
    assert result.returncode == 2 and "pass --repository ID" in result.stderr
    assert f"(id {repository.id})" in result.stderr
