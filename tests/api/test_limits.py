"""Field limits below the body limit: long texts get a 400 naming the field, not a row that
every list then carries."""

import pytest

from convoys.models import Bead
from rigs.models import Rig
from tests import factories
from tests.api.conftest import error_of

pytestmark = pytest.mark.django_db

LONG = "x" * 100_000  # under the 1 MiB body limit, over the 20,000-character field limit


def test_a_long_bead_description_is_refused_naming_the_field(make_agent):
    agent, client = make_agent("owner")
    rig = factories.rig(agent=agent, state=Rig.State.WORKING)
    response = client.post(
        "/api/v1/beads/", {"title": "t", "rig": rig.id, "description": LONG}, format="json"
    )
    assert response.status_code == 400
    assert error_of(response)["field"] == "description"
    assert not Bead.objects.exists()
    bead = factories.bead(rig=rig)
    for field in ("description", "acceptance_criteria"):
        response = client.patch(f"/api/v1/beads/{bead.id}/", {field: LONG}, format="json")
        assert response.status_code == 400 and error_of(response)["field"] == field
    response = client.patch(f"/api/v1/beads/{bead.id}/", {"title": "y" * 301}, format="json")
    assert response.status_code == 400 and error_of(response)["field"] == "title"
    ok = client.patch(f"/api/v1/beads/{bead.id}/", {"description": "x" * 20_000}, format="json")
    assert ok.status_code == 200


def test_long_convoy_and_leg_texts_are_refused_naming_the_field(operator):
    repo = factories.repository()
    rig = factories.rig(repository=repo, state=Rig.State.READY)

    def create(**changes):
        leg = {"key": "a", "title": "A", "rig": rig.id, **changes.pop("leg", {})}
        body = {"title": "c", "repository": repo.id, "legs": [leg], **changes}
        return operator.post("/api/v1/convoys/", body, format="json")

    for changes, field in [
        ({"description": LONG}, "description"),
        ({"title": "t" * 201}, "title"),
        ({"leg": {"description": LONG}}, "legs[0].description"),
        ({"leg": {"title": "t" * 201}}, "legs[0].title"),
    ]:
        response = create(**changes)
        assert response.status_code == 400, changes
        assert error_of(response)["field"] == field
    assert create().status_code == 201
