"""Every admin page renders for a superuser, and actions go through the services."""

import re

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.contrib.messages.storage.cookie import MessageSerializer
from django.core import signing
from django.urls import reverse

from convoys.models import Bead, ReviewComment
from events.models import Event
from notifications.models import Notification, Webhook, WebhookDelivery
from rigs import services
from rigs.models import Agent, ApiToken, MergeApproval, MergeRequest, Rig, hash_token
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def populated():
    repo = factories.repository()
    rig = factories.rig(repository=repo)
    convoy = factories.convoy(repository=repo)
    leg = factories.leg(convoy=convoy, rig=rig)
    other = factories.leg(convoy=convoy)
    leg.depends_on.add(other)
    bead = factories.bead(rig=rig, leg=leg)
    dep = factories.bead(rig=rig)
    bead.dependencies.create(depends_on=dep)
    mr = factories.merge_request(rig=rig)
    MergeApproval.objects.create(merge_request=mr, commit="a" * 40, verdict="approved", by="o")
    factories.notification(rig=rig)
    ReviewComment.objects.create(rig=rig, author="olive", path="a.py", line=3, text="why?")
    factories.event(rig=rig, convoy=convoy)
    hook = Webhook.objects.create(repository=repo, url="http://127.0.0.1:9/h", secret="s")
    WebhookDelivery.objects.create(webhook=hook, event="notification.info", payload={})
    token = ApiToken(user=User.objects.create_user("scripter"), name="ci")
    token.issue()
    token.save()
    return locals()


def registered_models():
    return [
        model
        for model in admin.site._registry
        if model._meta.app_label in ("rigs", "notifications", "convoys", "events")
    ]


def test_every_domain_model_is_registered():
    names = {m.__name__ for m in registered_models()}
    assert names >= {
        "Repository",
        "Agent",
        "Rig",
        "MergeRequest",
        "Convoy",
        "Leg",
        "LegDependency",
        "Bead",
        "BeadDependency",
        "Notification",
        "Event",
    } - {"LegDependency", "BeadDependency"}  # those are edited inline


def test_changelists_and_change_pages_render(admin_client, populated):
    for model in registered_models():
        meta = model._meta
        url = reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")
        response = admin_client.get(url)
        assert response.status_code == 200, url
        obj = model.objects.first()
        assert obj is not None, f"fixture has no {meta.model_name}"
        url = reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])
        response = admin_client.get(url)
        assert response.status_code == 200, url


def test_add_pages_render_where_adding_is_allowed(admin_client):
    for model in registered_models():
        meta = model._meta
        model_admin = admin.site._registry[model]
        url = reverse(f"admin:{meta.app_label}_{meta.model_name}_add")
        response = admin_client.get(url)
        expected = 200 if model_admin.has_add_permission(_Req()) else 403
        assert response.status_code == expected, url


class _Req:
    class user:
        is_active = is_staff = is_superuser = True

        @staticmethod
        def has_perm(*a):
            return True


def test_changelist_search_and_filters(admin_client, populated):
    url = reverse("admin:rigs_rig_changelist")
    assert (
        admin_client.get(url, {"q": populated["rig"].slug, "state": "requested"}).status_code == 200
    )
    url = reverse("admin:convoys_bead_changelist")
    assert admin_client.get(url, {"status": "open", "q": "bead"}).status_code == 200


def test_events_are_read_only_in_admin(admin_client, populated):
    event = Event.objects.first()
    url = reverse("admin:events_event_delete", args=[event.pk])
    assert admin_client.post(url, {"post": "yes"}).status_code == 403
    assert Event.objects.filter(pk=event.pk).exists()


def shown_tokens(response) -> list[str]:
    return re.findall(r'<code class="gastown-token">([^<]+)</code>', response.content.decode())


def assert_token_only_on_the_page(client, response, token: str) -> None:
    """The token is in this response's body and nowhere that outlives it: no cookie (the
    messages cookie is signed, not encrypted), no session, no message, no cache."""
    assert response.status_code == 200 and token in response.content.decode()
    assert "no-store" in response["Cache-Control"]
    for morsel in [*response.cookies.values(), *client.cookies.values()]:
        assert token not in morsel.value and token not in signing_unsigned(morsel.value)
    assert token not in str(dict(client.session.items()))
    later = client.get(reverse("admin:index"))
    assert token not in later.content.decode()
    assert not [m for m in later.context["messages"] if token in str(m)]


def signing_unsigned(value: str) -> str:
    """A signed cookie's payload, decoded the way anyone holding the cookie could."""
    try:
        return str(
            signing.loads(value, salt="django.contrib.messages", serializer=MessageSerializer)
        )
    except (signing.BadSignature, ValueError):
        return ""


def test_agent_add_shows_token_once_and_stores_hash(admin_client):
    response = admin_client.post(
        reverse("admin:rigs_agent_add"),
        {"name": "claude-7", "runtime": "custom", "runtime_command": "", "is_active": "on"},
    )
    [token] = shown_tokens(response)
    agent = Agent.objects.get(name="claude-7")
    assert agent.token_hash == hash_token(token)
    assert_token_only_on_the_page(admin_client, response, token)


def test_agent_rotate_action_shows_the_new_tokens_on_the_page(admin_client):
    first, _ = services.agent_create(name="claude-1")
    second, _ = services.agent_create(name="claude-2")
    response = admin_client.post(
        reverse("admin:rigs_agent_changelist"),
        {"action": "rotate_token", "_selected_action": [first.pk, second.pk]},
    )
    tokens = shown_tokens(response)
    assert len(tokens) == 2
    hashes = {Agent.objects.get(pk=a.pk).token_hash for a in (first, second)}
    assert {hash_token(t) for t in tokens} == hashes
    for token in tokens:
        assert_token_only_on_the_page(admin_client, response, token)


def test_api_token_add_shows_it_on_the_page(admin_client):
    user = User.objects.create_user("scripter")
    response = admin_client.post(
        reverse("admin:rigs_apitoken_add"), {"user": user.pk, "name": "ci", "expires_at": ""}
    )
    [token] = shown_tokens(response)
    assert ApiToken.objects.get(user=user).token_hash == hash_token(token)
    assert_token_only_on_the_page(admin_client, response, token)


def empty_inlines(client, url: str) -> dict:
    """The management forms of a change page's inlines (other apps add theirs), all empty."""
    data = {}
    for inline in client.get(url).context["inline_admin_formsets"]:
        prefix = inline.formset.prefix
        data |= {f"{prefix}-TOTAL_FORMS": 0, f"{prefix}-INITIAL_FORMS": 0}
    return data


def test_rig_change_form_saves_through_the_service(admin_client):
    rig = factories.rig(state=Rig.State.WORKING)
    before = Event.objects.count()
    response = admin_client.post(
        reverse("admin:rigs_rig_change", args=[rig.pk]),
        {
            "agent": rig.agent_id,
            "scope": '["api/**"]',
            "watch": "[]",
            "role": "api",
            "notify_level": "important",
            "state": "merged",  # read-only: ignored
            **empty_inlines(admin_client, reverse("admin:rigs_rig_change", args=[rig.pk])),
        },
    )
    assert response.status_code == 302, [
        (f.formset.prefix, f.formset.errors, f.formset.non_form_errors())
        for f in response.context["inline_admin_formsets"]
    ]
    rig.refresh_from_db()
    assert (rig.role, rig.notify_level, rig.scope, rig.state) == (
        "api",
        "important",
        ["api/**"],
        Rig.State.WORKING,
    )
    events = list(Event.objects.order_by("id")[before:].values_list("kind", "payload"))
    assert events == [
        (
            "rig.updated",
            {"rig": rig.id, "slug": rig.slug, "fields": ["notify_level", "role", "scope"]},
        )
    ]


def test_merge_request_priority_is_changed_through_the_service(admin_client):
    mr = factories.merge_request()
    url = reverse("admin:rigs_mergerequest_change", args=[mr.pk])
    response = admin_client.post(url, {"priority": 0, "state": "merged", "source_branch": "x"})
    assert response.status_code == 302, response.content.decode()[:3000]
    mr.refresh_from_db()
    assert (mr.priority, mr.state, mr.source_branch) == (0, "queued", mr.rig.branch)
    assert Event.objects.filter(kind="merge_request.updated", payload__priority=0).count() == 1
    MergeRequest.objects.filter(pk=mr.pk).update(state=MergeRequest.State.TESTING)
    response = admin_client.post(url, {"priority": 4}, follow=True)
    messages = [str(m) for m in response.context["messages"]]
    assert any("Not saved" in m and "only a queued request" in m for m in messages), messages
    assert MergeRequest.objects.get(pk=mr.pk).priority == 0


def test_repository_and_agent_change_forms_save_through_services(admin_client, git_repo):
    repository = services.repository_register(name="app", path=str(git_repo))
    response = admin_client.post(
        reverse("admin:rigs_repository_change", args=[repository.pk]),
        {
            "name": "app",
            "target_branch": "main",
            "gate_command": "make test",
            "gate_timeout_seconds": 60,
            "setup_command": "",
            "copy_files": "[]",
            "link_files": "[]",
            "merge_strategy": "merge",
            "batch_size": 4,
            "review_required": 0,
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    event = Event.objects.get(kind="repository.updated")
    assert event.payload["fields"] == ["gate_command", "gate_timeout_seconds"]
    agent, _ = services.agent_create(name="claude-1")
    response = admin_client.post(
        reverse("admin:rigs_agent_change", args=[agent.pk]),
        {"name": "claude-1", "runtime": "custom", "runtime_command": "run-me", "is_active": "on"},
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    assert Agent.objects.get(pk=agent.pk).runtime_command == "run-me"
    assert Event.objects.get(kind="agent.updated").payload["fields"] == ["runtime_command"]


def test_agent_add_refuses_bad_name(admin_client):
    response = admin_client.post(
        reverse("admin:rigs_agent_add"), {"name": "-rm -rf", "runtime": "custom"}
    )
    assert response.status_code == 200
    assert "not a valid slug" in response.content.decode()
    assert not Agent.objects.exists()


def test_cancel_merge_request_action(admin_client, populated):
    mr = MergeRequest.objects.get()
    response = admin_client.post(
        reverse("admin:rigs_mergerequest_changelist"),
        {"action": "cancel", "_selected_action": [mr.pk]},
        follow=True,
    )
    assert response.status_code == 200
    mr.refresh_from_db()
    assert mr.state == MergeRequest.State.CANCELLED
    assert Event.objects.filter(kind="merge_request.state", payload__to="cancelled").exists()


def test_refused_action_is_reported_not_applied(admin_client, populated):
    mr = MergeRequest.objects.get()
    MergeRequest.objects.filter(pk=mr.pk).update(state=MergeRequest.State.MERGED)
    response = admin_client.post(
        reverse("admin:rigs_mergerequest_changelist"),
        {"action": "cancel", "_selected_action": [mr.pk]},
        follow=True,
    )
    messages = [str(m) for m in response.context["messages"]]
    assert any("cannot go from 'merged' to 'cancelled'" in m for m in messages)
    mr.refresh_from_db()
    assert mr.state == MergeRequest.State.MERGED


def test_close_bead_and_ack_notification_actions(admin_client, populated):
    bead = populated["bead"]
    admin_client.post(
        reverse("admin:convoys_bead_changelist"),
        {"action": "close", "_selected_action": [bead.pk]},
    )
    bead.refresh_from_db()
    assert bead.status == Bead.Status.CLOSED and bead.closed_at is not None
    note = Notification.objects.get()
    admin_client.post(
        reverse("admin:notifications_notification_changelist"),
        {"action": "ack", "_selected_action": [note.pk]},
    )
    note.refresh_from_db()
    assert note.acked_at is not None


def test_bead_added_in_admin_gets_a_short_id(admin_client, populated):
    rig = populated["rig"]
    response = admin_client.post(
        reverse("admin:convoys_bead_add"),
        {
            "title": "Write docs",
            "rig": rig.pk,
            "priority": 1,
            "type": "task",
            "labels": "[]",
            "dependencies-TOTAL_FORMS": 0,
            "dependencies-INITIAL_FORMS": 0,
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    bead = Bead.objects.get(title="Write docs")
    assert bead.short_id.startswith("gt-")
