"""`convoys.plan_import.plan_parse`: a Markdown plan read into a convoy's input, with every
syntax error on its line (a pure function: no database). The import end to end is in
tests/api/test_convoy_import.py; the leg's checklist in the briefing is here."""

import os

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from convoys.briefing import PRIME_ACCEPTANCE, prime_text
from convoys.plan_import import PLAN_MAX_BEADS, PLAN_MAX_LEGS, plan_parse
from convoys.services.legs_input import legs_validate
from rigs.models import Agent, Repository, Rig
from tests import factories


def parse_ok(text: str):
    plan, errors = plan_parse(text)
    assert errors == [], errors
    return plan


def test_every_feature_of_the_format():
    plan = parse_ok(
        "\ufeff# Ship it\r\n"
        "\r\n"
        "The convoy's description,\r\n"
        "on two lines.\r\n"
        "## api — API endpoints\r\n"
        "**Depends on:** `db`, schema\r\n"
        "Rig: `rig-api`\r\n"
        "SCOPE: src/api/**, src/shared/**\r\n"
        "Watch: none\r\n"
        "Acceptance:\r\n"
        "\r\n"
        "- one\r\n"
        "* two\r\n"
        "\r\n"
        "- a plain bullet: description\r\n"
        "- [ ] First task\r\n"
        "  its description\r\n"
        "  - a sub-point of it\r\n"
        "* [X] Done already\r\n"
        "### Notes\r\n"
        "```\r\n"
        "## not a leg\r\n"
        "- [ ] not a task\r\n"
        "```\r\n"
        "## db \u2013 Schema\r\n"  # an en dash
        "Agent: bot\r\n"
        "Depends-on: none\r\n"
        "Acceptance: a; b ;; c\r\n"
        "## schema: Schema two\r\n"
        "Agent: bot\r\n"
        "## ui - The UI - v2\r\n"
        "Agent: bot\r\n"
    )
    data = plan.convoy_input()
    assert data["title"] == "Ship it"
    assert data["description"] == "The convoy's description,\non two lines."
    api, db, schema, ui = data["legs"]
    assert api == {
        "key": "api",
        "title": "API endpoints",
        "description": "- a plain bullet: description\n### Notes\n```\n## not a leg\n"
        "- [ ] not a task\n```",
        "acceptance": ["one", "two"],
        "depends_on": ["db", "schema"],
        "scope": ["src/api/**", "src/shared/**"],
        "watch": [],
        "rig": "rig-api",
    }
    assert (db["key"], db["title"], db["agent"], db["depends_on"]) == ("db", "Schema", "bot", [])
    assert db["acceptance"] == ["a", "b", "c"]
    assert (schema["key"], schema["title"]) == ("schema", "Schema two")
    assert (ui["key"], ui["title"]) == ("ui", "The UI - v2")
    beads = [(b.leg, b.line, b.title, b.closed, b.description) for b in plan.beads]
    assert beads == [
        (0, 16, "First task", False, "its description\n- a sub-point of it"),
        (0, 19, "Done already", True, ""),
    ]
    assert plan.line_of("legs[0].depends_on") == 6 and plan.line_of("legs[0].rig") == 7
    assert plan.line_of("legs[0].acceptance") == 10 and plan.line_of("legs[1].agent") == 26
    assert plan.line_of("legs[3].title") == 31 and plan.line_of("title") == 1


def test_a_heading_needs_a_separator_and_tasks_need_a_leg():
    plan, errors = plan_parse("# T\n- [x] early\n## api\n## API endpoints\n## a —\n- [ ]\n")
    assert [(e.line, e.field) for e in errors] == [
        (2, "beads"),
        (3, "legs[0].title"),
        (4, "legs[1].key"),
        (6, "beads[0]"),
    ]
    # `## a —` parses (its empty title is refused by the legs' rules, on line 5)
    assert [(leg.key, leg.title) for leg in plan.legs] == [
        ("api", ""),
        ("", "API endpoints"),
        ("a", ""),
    ]
    assert str(errors[0]).startswith("line 2: a task")


def test_limits():
    legs = "".join(f"## l{n} — Leg {n}\nAgent: bot\n" for n in range(PLAN_MAX_LEGS + 2))
    _, errors = plan_parse("# T\n" + legs)
    assert [(e.line, e.field) for e in errors] == [(2 + 2 * PLAN_MAX_LEGS, "legs")]
    tasks = "".join(f"- [ ] task {n}\n" for n in range(PLAN_MAX_BEADS + 3))
    _, errors = plan_parse("# T\n## a — A\n" + tasks)
    assert [(e.line, e.field) for e in errors] == [(3 + PLAN_MAX_BEADS, "beads")]
    _, errors = plan_parse("# T\n## a — A\n" + "x" * 20_001 + "\n- [ ] " + "y" * 301)
    assert [(e.line, e.field) for e in errors] == [(3, "legs[0].description"), (4, "beads[0]")]


@pytest.mark.django_db
def test_legs_validate_finds_a_cycle_beside_other_errors():
    repository = factories.repository()
    factories.agent(name="bot")
    legs = [
        {"key": "a", "title": "A", "agent": "bot", "depends_on": ["b", "ghost"]},
        {"key": "b", "title": "B", "agent": "bot", "depends_on": ["a"]},
        {"key": "b", "title": "", "agent": "bot"},
    ]
    with pytest.raises(Exception) as caught:
        legs_validate(repository=repository, legs=legs, existing={}, convoy=None)
    errors = caught.value.message_dict
    assert "unknown leg 'ghost'" in errors["legs[0].depends_on"][0]
    assert errors["legs[1].depends_on"] == ["dependency cycle: a -> b -> a."]
    assert "duplicate key 'b'" in errors["legs[2].key"][0]
    assert errors["legs[2].title"] == ["a leg needs a title."]


@pytest.mark.django_db
def test_the_briefing_carries_the_legs_acceptance_checklist_bounded():
    from convoys import services

    agent = factories.agent(name="briefed")
    repository = factories.repository()
    rig = factories.rig(repository=repository, slug="brief", agent=agent, state=Rig.State.READY)
    items = [f"item {n} " + "word " * 40 for n in range(PRIME_ACCEPTANCE + 3)]
    convoy = services.convoy_create(
        title="Briefed",
        repository=repository,
        legs=[
            {
                "key": "api",
                "title": "API",
                "rig": rig,
                "description": "Build the login API.",
                "acceptance": items,
            }
        ],
    )
    services.convoy_launch(convoy=convoy)
    text = prime_text(agent)
    assert "Description: Build the login API." in text
    assert "Acceptance (each must hold before `gt done`):" in text
    checklist = [line for line in text.splitlines() if line.startswith("- [ ] item ")]
    assert len(checklist) == PRIME_ACCEPTANCE and all(len(line) <= 106 for line in checklist)
    assert f"- … 3 more (`gt convoy show {convoy.id} --json`)" in text


LINES = st.one_of(
    st.sampled_from(
        [
            "# Title",
            "#",
            "## api — API",
            "## db: Schema",
            "## ui - UI",
            "## lonely",
            "## Two words",
            "Depends on: api, db",
            "Depends on: none",
            "Depends on: ghost",
            "Rig: r1",
            "Rig:",
            "Agent: bot",
            "Agent: ghost",
            "Scope: src/**, /etc",
            "Watch: ../x",
            "Acceptance:",
            "Acceptance: a; b",
            "- an item",
            "- [ ] a task",
            "- [x] done",
            "- [ ]",
            "  indented",
            "```",
            "",
        ]
    ),
    st.text(max_size=30),
)


@pytest.mark.django_db
@hypothesis_settings(
    max_examples=int(os.environ.get("GASTOWN_FUZZ_EXAMPLES", "60")),
    derandomize=not os.environ.get("GASTOWN_FUZZ_EXAMPLES"),
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(lines=st.lists(LINES, max_size=25))
def test_any_plan_is_either_valid_or_every_error_has_a_line(lines):
    from convoys.services.plans import PlanInvalid, plan_check

    repository = Repository.objects.first() or factories.repository()
    if not Agent.objects.filter(name="bot").exists():
        factories.agent(name="bot")
        factories.rig(repository=repository, slug="r1", state=Rig.State.READY)
    text = "\n".join(lines)
    count = len(text.split("\n"))
    try:
        parsed, legs = plan_check(repository=repository, plan=text)
    except PlanInvalid as exc:
        assert exc.errors and all(1 <= e.line <= count for e in exc.errors), exc.errors
    else:
        assert parsed.title and legs
