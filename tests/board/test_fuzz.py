"""Property-based tests for the board's inputs (issue 15): whatever a browser (or anyone with a
session) sends to a form or a query string, the board answers without a 5xx, and a refused
form writes nothing. Hypothesis generates the values; the run is derandomized so that it never
flakes (GASTOWN_FUZZ_EXAMPLES=500 for a longer hunt)."""

import os

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from convoys.models import Convoy
from tests import factories

pytestmark = pytest.mark.django_db

FUZZ = hypothesis_settings(
    max_examples=int(os.environ.get("GASTOWN_FUZZ_EXAMPLES", "40")),
    derandomize=not os.environ.get("GASTOWN_FUZZ_EXAMPLES"),
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)

# Text a hostile form field may carry: numbers of every kind, unicode digits, shell and path
# characters, control characters (but NUL, which no browser form sends).
NASTY = st.one_of(
    st.text(alphabet=st.characters(blacklist_characters="\x00"), max_size=40),
    st.sampled_from(
        [
            "²",
            "١٢",
            str(2**63),
            str(2**64),
            "9" * 5000,
            "-1",
            "0",
            "1e9",
            "NaN",
            "inf",
            "rig:",
            "rig:²",
            f"rig:{2**64}",
            "agent:",
            "agent:../../etc",
            "$(reboot)",
            "; rm -rf /",
            "../..",
            "a" * 300,
        ]
    ),
)
FIELDS = st.dictionaries(
    st.sampled_from(
        [
            "title",
            "repository",
            "target_branch",
            "budget_usd",
            "use_integration_branch",
            "description",
        ]
    ),
    NASTY,
)
LEGS = st.lists(
    st.fixed_dictionaries(
        {
            "leg_key": NASTY,
            "leg_title": NASTY,
            "leg_assignee": NASTY,
            "leg_depends_on": NASTY,
        }
    ),
    max_size=4,
)


@FUZZ
@given(fields=FIELDS, legs=LEGS)
def test_the_new_convoy_form_never_fails_on_any_input(operator_client, fields, legs):
    data: dict[str, list[str] | str] = dict(fields)
    for name in ("leg_key", "leg_title", "leg_assignee", "leg_depends_on"):
        data[name] = [leg[name] for leg in legs]
    before = Convoy.objects.count()
    response = operator_client.post("/convoys/new/", data)
    assert response.status_code < 500
    if response.status_code >= 400:
        assert Convoy.objects.count() == before  # refused: nothing half-written


@FUZZ
@given(params=st.dictionaries(st.sampled_from(["repository", "state", "q", "after"]), NASTY))
def test_board_query_strings_never_fail(viewer_client, params):
    for url in ("/", "/board/columns/", "/repositories/"):
        assert viewer_client.get(url, params).status_code < 500


@FUZZ
@given(value=NASTY)
def test_ids_in_board_paths_never_fail(viewer_client, value):
    repo = factories.repository()
    for url in (f"/convoys/{value}/", f"/rigs/{value}/", f"/repositories/{repo.id}/queue/"):
        assert viewer_client.get(url).status_code < 500
