"""The repositories page's "Add repository" form (issue 17, part 4): admins only (it sets
commands the server runs), the API's service and checks, errors beside their field; then a rig
provisions on the new repository."""

import pytest
from django.db import transaction

from rigs import services
from rigs.models import Repository, Rig
from tests.rigs.helpers import wait_rig_state

URL = "/repositories/add/"
JSON = {"HTTP_ACCEPT": "application/json"}


def test_an_admin_adds_a_repository_then_a_rig_provisions_on_it(
    admin_client, git_repo, celery_worker
):
    page = admin_client.get("/repositories/").content.decode()
    assert 'id="add-repository"' in page and 'name="gate_command"' in page
    assert str(git_repo.parent.resolve()) in page  # where repositories may be added from

    response = admin_client.post(
        URL, {"path": str(git_repo), "name": "", "target_branch": "", "gate_command": "true"}
    )
    assert response.status_code == 302 and response["Location"] == "/repositories/"
    repository = Repository.objects.get()
    assert repository.name == "app" and repository.target_branch == "main"
    assert repository.gate_command == "true" and repository.path == str(git_repo.resolve())
    shown = admin_client.get("/repositories/").content.decode()
    assert (
        "Repository &#x27;app&#x27; registered" in shown
        and f"/repositories/{repository.id}/queue/" in shown
    )

    with transaction.atomic():
        rig = services.rig_request(repository=repository, slug="first")
    rig = wait_rig_state(rig, Rig.State.READY, Rig.State.FAILED)
    assert rig.state == Rig.State.READY, rig.failure_reason


@pytest.mark.django_db
@pytest.mark.parametrize("who", ["operator_client", "viewer_client"])
def test_operators_and_viewers_neither_see_the_form_nor_may_post_it(request, who, git_repo):
    client = request.getfixturevalue(who)
    page = client.get("/repositories/")
    assert page.status_code == 200 and 'id="add-repository"' not in page.content.decode()
    for extra in ({}, JSON):
        response = client.post(URL, {"path": str(git_repo), "gate_command": "true"}, **extra)
        assert response.status_code == 403
    assert "Only admins may add repositories" in response.json()["error"]["message"]
    assert not Repository.objects.exists()


@pytest.mark.django_db
def test_a_bad_path_is_shown_beside_it_naming_the_setting(admin_client, git_repo, repo_root):
    response = admin_client.post(URL, {"path": "/etc", "name": "etc"})
    assert response.status_code == 400
    html = response.content.decode()
    assert 'id="add-repository-errors"' in html
    path_field = html.split('id="id_path"')[1].split("</div>")[0]
    assert 'aria-invalid="true"' in path_field and 'id="err-path"' in path_field
    assert f"GASTOWN_REPOSITORY_ROOTS is {repo_root.resolve()}" in path_field
    assert 'value="/etc"' in html  # what was typed stays in the form

    response = admin_client.post(URL, {"path": str(git_repo), "target_branch": "trunk"})
    assert response.status_code == 400
    target_field = response.content.decode().split('id="id_target_branch"')[1].split("</div>")[0]
    assert "branch &#x27;trunk&#x27; does not exist" in target_field

    response = admin_client.post(URL, {"path": ""})
    assert response.status_code == 400 and "give the path." in response.content.decode()
    response = admin_client.post(URL, {"path": str(git_repo), "name": "Not A Slug"})
    assert response.status_code == 400 and 'id="err-name"' in response.content.decode()
    assert not Repository.objects.exists()
