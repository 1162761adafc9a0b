"""Every list answers in a number of queries that does not grow with the page."""

import pytest

from convoys import services
from rigs.models import Rig
from tests import factories

pytestmark = pytest.mark.django_db


def fill(n: int, agent) -> None:
    repository = factories.repository()
    for i in range(n):
        rig = factories.rig(repository=repository, agent=agent, state=Rig.State.WORKING)
        bead = services.bead_create(title=f"b{i}", rig=rig)
        services.bead_dependency_add(bead=services.bead_create(title="c", rig=rig), depends_on=bead)
        factories.notification(rig=rig)
        factories.merge_request(rig=rig)
        services.convoy_create(
            title=f"c{i}", repository=repository,
            legs=[{"key": "a", "title": "A", "rig": rig.id}, {"key": "b", "title": "B",
                  "agent": agent.name, "depends_on": ["a"]}],
        )  # fmt: skip


LISTS = [
    "/api/v1/me/",
    "/api/v1/repositories/",
    "/api/v1/rigs/",
    "/api/v1/merge-requests/",
    "/api/v1/convoys/",
    "/api/v1/beads/",
    "/api/v1/beads/?ready=true",
    "/api/v1/notifications/",
    "/api/v1/notifications/?unacked=true",
    "/api/v1/events/",
]


@pytest.mark.parametrize("url", LISTS)
def test_queries_do_not_grow_with_the_page(make_agent, url, django_assert_max_num_queries):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    agent, client = make_agent()
    fill(2, agent)
    with CaptureQueriesContext(connection) as small:
        assert client.get(url).status_code == 200
    fill(25, agent)
    with django_assert_max_num_queries(len(small)):
        response = client.get(url)
    assert response.status_code == 200
    assert len(small) <= 6, [q["sql"] for q in small.captured_queries]
