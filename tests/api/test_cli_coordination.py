"""The coordination verbs through `bin/gt` end to end: a real daphne server over real HTTP and a
real websocket, `gt` run as a subprocess with the standard library only, from inside an agent's
worktree (no GT_RIG: the rig is the one whose worktree holds the working directory).

- `gt send` reaches the other rig's inbox and, live, that rig's websocket group; a reply threads
  back with `--reply-to`; a convoy reaches every rig of it with work.
- `gt escalate` asks a person; an operator answers (the API); the answer is in the agent's inbox.
- `gt update`, `gt comment` (listed by `gt show`), `gt blocked`, `gt release`.
- `gt done --status deferred "why"` ends the turn without a merge.
- Who may, and bad input, with their exit codes."""

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from websockets.sync.client import connect

from convoys.models import Bead, Convoy, Leg
from convoys.services import bead_dependency_add
from notifications.models import Notification
from rigs import services
from rigs.models import Rig
from rigs.permissions import OPERATOR_GROUP
from tests import factories
from tests.api.test_cli import as_json, gt, ok

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def town(tmp_path):
    """ada works on leg `api` (in its worktree), bob on `web`, of convoy `auth`; ada also has a
    rig without a leg (so the rig must come from the working directory); cyd works elsewhere."""
    repo = factories.repository(name="app")
    ada, ada_token = services.agent_create(name="ada")
    bob, bob_token = services.agent_create(name="bob")
    cyd, cyd_token = services.agent_create(name="cyd")
    worktree = tmp_path / "worktrees" / "app" / "api"
    (worktree / "src").mkdir(parents=True)
    api = factories.rig(repository=repo, slug="api", agent=ada, state=Rig.State.WORKING,
                        worktree_path=str(worktree))  # fmt: skip
    factories.rig(repository=repo, slug="docs", agent=ada, state=Rig.State.READY,
                  worktree_path=str(tmp_path / "worktrees" / "app" / "docs"))  # fmt: skip
    web = factories.rig(repository=repo, slug="web", agent=bob, state=Rig.State.WORKING)
    far = factories.rig(slug="far", agent=cyd, state=Rig.State.WORKING)  # another repository
    convoy = factories.convoy(repository=repo, slug="auth", title="Auth",
                              state=Convoy.State.LAUNCHED)  # fmt: skip
    factories.leg(convoy=convoy, key="api", rig=api, state=Leg.State.WORKING)
    factories.leg(convoy=convoy, key="web", rig=web, state=Leg.State.WORKING)
    return {
        "api": api, "web": web, "far": far, "worktree": worktree / "src",
        "ada": ada_token, "bob": bob_token, "cyd": cyd_token,
    }  # fmt: skip


def ws_messages(socket, until, timeout: float = 15.0) -> list[dict]:
    """Frames from the socket until `until(frame)` holds (or the time is up)."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            frame = json.loads(socket.recv(timeout=max(0.1, deadline - time.monotonic())))
        except TimeoutError:
            break
        seen.append(frame)
        if until(frame):
            break
    return seen


def operator_token(django_user_model) -> str:
    person = django_user_model.objects.create_user("olive", password="pw-123456789")
    person.groups.add(Group.objects.get_or_create(name=OPERATOR_GROUP)[0])
    return services.api_token_create(user=person, name="answers")[1]


def api_post(url: str, token: str, path: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{url}/api/v1/{path}",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_send_reaches_the_other_rigs_inbox_and_websocket_and_replies_thread(asgi_server, town):
    url, api, web, here = asgi_server, town["api"], town["web"], town["worktree"]
    host = url.removeprefix("http://")
    with connect(
        f"ws://{host}/ws/events/?groups=rig.{web.id}&token={town['bob']}", origin=url
    ) as socket:
        assert ws_messages(socket, lambda f: f.get("type") == "ready")[-1]["type"] == "ready"
        sent = as_json(gt(url, town["ada"], "send", "web", "I renamed make_token.", "--json",
                          cwd=here))  # fmt: skip
        assert sent["to"] == "rig web" and sent["count"] == 1
        message = sent["messages"][0]
        assert message["rig"] == web.id and message["source_rig"] == api.id  # from the worktree
        frames = ws_messages(
            socket,
            lambda f: f.get("type") == "event"
            and f["event"]["kind"] == "notification.new"
            and f["event"]["payload"]["notification"] == message["id"],
        )
        live = frames[-1]["event"]
        assert live["kind"] == "notification.new" and live["rig"] == web.id
        assert live["payload"]["kind"] == "message"
        assert live["payload"]["summary"] == "ada (rig api): I renamed make_token."

    inbox = ok(gt(url, town["bob"], "inbox"))
    assert f"#{message['id']} [info message]" in inbox and "ada (rig api)" in inbox
    reply = ok(gt(url, town["bob"], "send", "--reply-to", str(message["id"]), "Thanks."))
    assert "sent to rig api" in reply
    mine = ok(gt(url, town["ada"], "inbox", cwd=here))
    assert f"(re #{message['id']}) bob (rig web): Thanks." in mine
    assert Notification.objects.get(rig=api, kind="message").reply_to_id == message["id"]

    everyone = as_json(gt(url, town["ada"], "--json", "send", "convoy:auth", "Standup?", cwd=here))
    assert everyone["to"] == "convoy auth" and [m["rig"] for m in everyone["messages"]] == [web.id]

    outside = gt(url, town["ada"], "send", f"rig:{town['far'].id}", "hello", cwd=here)
    assert outside.returncode == 3 and "own repositories" in outside.stderr
    assert gt(url, town["ada"], "send", "web", "", cwd=here).returncode == 2
    assert gt(url, town["ada"], "send", "web", "x" * 4001, cwd=here).returncode == 2
    assert gt(url, town["ada"], "send", "nobody-by-that-name", "x", cwd=here).returncode == 4
    assert gt(url, town["ada"], "send", "rig:nope", "x", cwd=here).returncode == 4
    assert gt(url, town["ada"], "send", "only-one-word", cwd=here).returncode == 2
    error = gt(url, town["ada"], "--json", "send", "api", "to myself", cwd=here)
    assert error.returncode == 2 and json.loads(error.stderr)["error"]["field"] == "to"


def test_escalate_is_answered_and_the_answer_reaches_the_agent(
    asgi_server, town, django_user_model
):
    url, api, here = asgi_server, town["api"], town["worktree"]
    bead = factories.bead(rig=api, title="Choose a token format")
    asked = ok(gt(url, town["ada"], "escalate", "JWT or opaque?", "--bead", bead.short_id,
                  cwd=here))  # fmt: skip
    assert "escalated as #" in asked
    notice = Notification.objects.get(rig=api, kind="escalation")
    assert notice.severity == "critical" and notice.changes["bead"] == bead.short_id
    unknown = gt(url, town["ada"], "escalate", "Which?", "--bead", "gt-zzzzzz", cwd=here)
    assert unknown.returncode == 4 and "does not exist" in unknown.stderr  # as for `gt show`

    viewer = django_user_model.objects.create_user("vic", password="pw-123456789")
    viewer.groups.add(Group.objects.get_or_create(name="viewer")[0])
    viewer_token = services.api_token_create(user=viewer)[1]
    path = f"notifications/{notice.id}/answer/"
    assert api_post(url, viewer_token, path, {"answer": "JWT"})[0] == 403
    assert gt(url, viewer_token, "answer", str(notice.id), "JWT").returncode == 3
    assert gt(url, town["ada"], "answer", str(notice.id), "JWT", cwd=here).returncode == 3
    olive = operator_token(django_user_model)
    assert gt(url, olive, "answer", "x", "JWT").returncode == 2
    assert gt(url, olive, "answer", "999999", "JWT").returncode == 4
    answered = ok(gt(url, olive, "answer", str(notice.id), "Opaque."))
    assert answered.startswith(f"answered #{notice.id} (now resolved)"), answered
    assert f"olive answered #{notice.id}: Opaque." in answered
    again = gt(url, olive, "--json", "answer", str(notice.id), "JWT after all")
    assert again.returncode == 5 and json.loads(again.stderr)["error"]["code"] == "already_resolved"
    inbox = ok(gt(url, town["ada"], "inbox", cwd=here))
    assert f"(re #{notice.id}) olive answered #{notice.id}: Opaque." in inbox
    everything = ok(gt(url, town["ada"], "inbox", "--all", cwd=here))
    assert "resolved: answered by olive: Opaque." in everything


def test_update_comment_show_blocked_release(asgi_server, town):
    url, api, here = asgi_server, town["api"], town["worktree"]
    schema = factories.bead(rig=api, title="Schema", priority=1)
    endpoint = factories.bead(rig=api, title="Endpoint", priority=2)
    bead_dependency_add(bead=endpoint, depends_on=schema)

    updated = as_json(gt(url, town["ada"], "update", schema.short_id, "--priority", "0",
                         "--title", "Schema v2", "--json", cwd=here))  # fmt: skip
    assert updated["priority"] == 0 and updated["title"] == "Schema v2"
    assert gt(url, town["ada"], "update", schema.short_id, cwd=here).returncode == 2  # nothing
    assert gt(url, town["ada"], "update", schema.short_id, "--status", "in_progress",
              cwd=here).returncode == 2  # fmt: skip
    assert gt(url, town["ada"], "update", schema.short_id, "--assignee", "bob",
              cwd=here).returncode == 3  # fmt: skip
    assert gt(url, town["bob"], "update", schema.short_id, "--title", "mine").returncode == 3

    ok(gt(url, town["bob"], "comment", endpoint.short_id, "web needs a 201 here"))
    ok(gt(url, town["ada"], "comment", endpoint.short_id, "ok, 201 it is", cwd=here))
    shown = ok(gt(url, town["ada"], "show", endpoint.short_id, cwd=here))
    assert "comments (2):" in shown
    assert "bob at" in shown and "web needs a 201 here" in shown and "ok, 201 it is" in shown
    as_data = as_json(gt(url, town["ada"], "show", endpoint.short_id, "--json", cwd=here))
    assert [c["author"] for c in as_data["comments"]] == ["bob", "ada"]
    assert gt(url, town["cyd"], "comment", endpoint.short_id, "hi").returncode == 3

    blocked = ok(gt(url, town["ada"], "blocked", cwd=here))
    assert endpoint.short_id in blocked and f"blocked by {schema.short_id} (open)" in blocked
    assert as_json(gt(url, town["ada"], "blocked", "--json", cwd=here))["count"] == 1

    ok(gt(url, town["ada"], "claim", schema.short_id, cwd=here))
    assert gt(url, town["bob"], "release", schema.short_id).returncode == 3  # not his
    released = ok(gt(url, town["ada"], "release", schema.short_id, cwd=here))
    assert f"released {schema.short_id}" in released
    assert Bead.objects.get(pk=schema.pk).assignee is None
    again = gt(url, town["ada"], "release", schema.short_id, cwd=here)
    assert again.returncode == 5 and "not claimed" in again.stderr


def test_done_with_a_status_ends_the_turn(asgi_server, town):
    url, api, here = asgi_server, town["api"], town["worktree"]
    leg = Leg.objects.get(rig=api)
    assert gt(url, town["ada"], "done", "--status", "later", "x", cwd=here).returncode == 2
    assert gt(url, town["ada"], "done", "--status", "deferred", cwd=here).returncode == 2
    assert gt(url, town["ada"], "done", "no status", cwd=here).returncode == 2
    assert gt(url, town["ada"], "done", "--status", "deferred", "x", "--force",
              cwd=here).returncode == 2  # fmt: skip
    ended = ok(gt(url, town["ada"], "done", "--status", "deferred",
                  "Waiting for the web leg's API.", cwd=here))  # fmt: skip
    assert "turn ended (deferred)" in ended and "Stop here" in ended
    notice = Notification.objects.get(rig=api, topic=f"turn:{leg.id}")
    assert notice.kind == "deferred" and notice.is_open
    as_mcp = as_json(gt(url, town["ada"], "--json", "done", "--status", "escalated",
                        "--reason", "Need a decision.", cwd=here))  # fmt: skip
    assert as_mcp["id"] == notice.id and as_mcp["kind"] == "escalation"
    # GT_RIG names a rig that is not bob's: not found among his rigs
    assert gt(url, town["bob"], "done", "--status", "deferred", "x", rig="api").returncode == 4


def git_worktree(path: Path, branch: str) -> Path:
    """A git work tree on `branch` (no commit needed: gt reads only the branch's name)."""
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", branch, str(path)], check=True, timeout=30)
    return path


def test_another_agents_worktree_is_refused_not_mistaken_for_yours(asgi_server, town, tmp_path):
    """Standing in a worktree on bob's rig branch (rig/web), ada's gt names that rig and her
    own instead of acting on one of hers; in a worktree on her own branch it acts on that rig."""
    url = asgi_server
    theirs = git_worktree(tmp_path / "elsewhere" / "web", "rig/web") / "src"
    theirs.mkdir()
    for argv in (("status",), ("ready",), ("create", "Stray"), ("done", "--force"),
                 ("ack", "--all"), ("send", "web", "hi"), ("prime",)):  # fmt: skip
        refused = gt(url, town["ada"], *argv, cwd=theirs)
        assert refused.returncode == 3, (argv, refused.stdout, refused.stderr)
        assert "is the worktree of rig web (branch rig/web), which is not yours" in refused.stderr
        assert "your live rigs: api (id" in refused.stderr and "docs (id" in refused.stderr
    assert not Bead.objects.filter(title="Stray").exists()
    hook = gt(url, town["ada"], "prime", "--hook", cwd=theirs,
              stdin=json.dumps({"hook_event_name": "SessionStart"}))  # fmt: skip
    assert hook.returncode == 0, hook.stderr  # a hook never breaks the agent's session
    context = json.loads(hook.stdout)["hookSpecificOutput"]["additionalContext"]
    assert "the briefing could not be read" in context and "which is not yours" in context
    # GT_RIG still says which rig, wherever gt runs
    assert "rig api" in ok(gt(url, town["ada"], "status", rig="api", cwd=theirs))
    # a clone of her own rig's branch whose path the server does not know: that rig
    mine = git_worktree(tmp_path / "laptop" / "docs", "rig/docs")
    assert ok(gt(url, town["ada"], "status", cwd=mine)).startswith("rig docs")


def test_ack_all_and_prime_act_on_the_rig_gt_resolves(asgi_server, town, tmp_path):
    """`gt ack --all` in a rig's worktree acks that rig's notices only (and says which); with no
    rig resolved, all of the agent's. `gt prime` outside any rig with several rigs with work is
    refused like `gt status` (its hook says why, exit 0)."""
    url, api, here = asgi_server, town["api"], town["worktree"]
    docs = Rig.objects.get(slug="docs")
    for rig in (api, docs):
        factories.notification(rig=rig, summary=f"to {rig.slug}")
    nowhere = tmp_path / "nowhere"
    nowhere.mkdir()

    several = gt(url, town["ada"], "prime", cwd=nowhere)
    assert several.returncode == 2 and "several rigs with work to do" in several.stderr
    assert "run gt inside one's worktree" in several.stderr
    hook = gt(url, town["ada"], "prime", "--hook", cwd=nowhere, stdin="")
    assert hook.returncode == 0 and "several rigs with work to do" in hook.stdout
    assert "Leg `api`" in ok(gt(url, town["ada"], "prime", cwd=here))

    acked = ok(gt(url, town["ada"], "ack", "--all", cwd=here))
    assert acked.strip() == "acknowledged 1 notification(s) of rig api"
    assert Notification.objects.get(rig=docs).state == "open"
    everything = ok(gt(url, town["ada"], "ack", "--all", cwd=nowhere))
    assert everything.strip() == "acknowledged 1 notification(s) of all your rigs (api, docs)"
    assert Notification.objects.get(rig=docs).state != "open"


def test_inbox_numbers_the_reply_and_shows_a_long_message_once(asgi_server, town):
    """A message's action says `gt send --reply-to <this notice's #>`: gt prints the notice's
    number there (inbox and prime). A long message is shown once, indented under its notice,
    and `do:` keeps only what to do."""
    url, here = asgi_server, town["worktree"]
    short = as_json(gt(url, town["bob"], "--json", "send", "api", "Are you on /login?"))
    number = short["messages"][0]["id"]
    paragraph = "The token format is settled: opaque tokens, revoked on logout. " * 20
    text = f"BEGIN {paragraph}\n\n{paragraph}\nsecond line\n\n{paragraph} END"
    assert 3000 < len(text) <= 4000
    long = as_json(gt(url, town["bob"], "--json", "send", "api", text))["messages"][0]["id"]

    inbox = ok(gt(url, town["ada"], "inbox", cwd=here))
    assert "<this notice's #>" not in inbox
    assert f'do: Reply with `gt send --reply-to {number} "…"`' in inbox
    assert f'do: Reply with `gt send --reply-to {long} "…"`' in inbox
    assert inbox.count("BEGIN") == 1 and inbox.count("END") == 1, inbox
    assert inbox.count(paragraph.strip()) == 3  # each paragraph once
    lines = inbox.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith(f"#{long} "))
    assert lines[head].endswith("bob (rig web):")
    assert lines[head + 1].startswith("    BEGIN")
    end = next(i for i in range(head, len(lines)) if "--reply-to" in lines[i])
    block = lines[head + 1 : end + 1]
    assert all(line == "" or line.startswith("    ") for line in block), block
    assert "    second line" in block
    prime = ok(gt(url, town["ada"], "prime", cwd=here))
    assert f"gt send --reply-to {number} " in prime and "<this notice's #>" not in prime
