"""`gt mcp` end to end: the official `mcp` Python SDK's client launches `bin/gt mcp` as a real
subprocess (standard library only: `python3 -I -S`) and talks to it over stdio, while `gt`
talks to a real daphne server (`asgi_server`) with a real Celery worker for the git work."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from django.db import transaction
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPError

from convoys import services as convoy_services
from convoys.models import Bead
from notifications.models import Notification
from rigs import operations, services
from rigs.models import MergeRequest, Rig
from tests.conftest import BASE_DIR
from tests.rigs.helpers import commit_file, register, wait_for, wait_rig_state

GT = BASE_DIR / "bin" / "gt"
TOOLS = [
    "prime", "ready", "show", "claim", "update", "close", "comment", "send", "escalate",
    "review", "inbox", "ack", "done",
]  # fmt: skip
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "0"},
    },
}


def server(url: str, token: str, cwd: Path, *extra: str) -> StdioServerParameters:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GT_URL": url, "GT_TOKEN": token}
    return StdioServerParameters(
        command=sys.executable, args=["-I", "-S", str(GT), "mcp", *extra], env=env, cwd=str(cwd)
    )


def raw_session(*messages, env: dict | None = None) -> tuple[list, str]:
    """Send lines to `gt mcp` and read every line it answers (stdin closed: it exits)."""
    lines = [m if isinstance(m, str) else json.dumps(m) for m in messages]
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(GT), "mcp"],
        input="\n".join(lines) + "\n",
        env={"PATH": "/usr/bin:/bin", "GT_URL": "http://127.0.0.1:9", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()], done.stderr


def text_of(result) -> str:
    return "\n".join(part.text for part in result.content)


def test_protocol_over_stdio():
    """The JSON-RPC side, no server needed: the handshake, errors, batches, and a stdout that
    carries nothing but JSON-RPC."""
    answers, log = raw_session(
        INITIALIZE,
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "ping"},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/list"},
        "not json",
        {"jsonrpc": "2.0", "id": 4, "method": "resources/list"},
        {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "nope"}},
        {"jsonrpc": "2.0", "id": 6, "method": "tools/call", "params": {"name": "claim"}},
        {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
         "params": {"name": "ready", "arguments": {"limit": "x", "bogus": 1}}},
        {"jsonrpc": "1.0", "id": 8, "method": "ping"},
        [{"jsonrpc": "2.0", "id": 9, "method": "ping"}, {"jsonrpc": "2.0", "method": "n"}],
        {"jsonrpc": "2.0", "id": 10, "method": "tools/call", "params": {"name": "ready"}},
    )  # fmt: skip
    by_id = {a["id"]: a for a in answers if isinstance(a, dict)}
    assert all(a["jsonrpc"] == "2.0" for a in by_id.values())  # nothing else on stdout
    init = by_id[1]["result"]
    assert init["protocolVersion"] == "2025-06-18"  # the client's, which gt speaks
    assert init["capabilities"] == {"tools": {"listChanged": False}}
    assert init["serverInfo"]["name"] == "gastown"
    assert by_id[2]["result"] == {}
    assert [t["name"] for t in by_id[3]["result"]["tools"]] == TOOLS
    assert by_id[None]["error"]["code"] == -32700  # the line that was not JSON
    assert by_id[4]["error"]["code"] == -32601
    assert by_id[5]["error"]["code"] == -32602  # an unknown tool is a protocol error
    missing = by_id[6]["result"]  # bad arguments are the model's to fix: a tool error
    assert missing["isError"] is True and "`id` is required" in missing["content"][0]["text"]
    bad = by_id[7]["result"]["content"][0]["text"]
    assert "`limit` must be an integer" in bad and "unknown argument `bogus`" in bad
    assert by_id[8]["error"]["code"] == -32600
    assert [a for a in answers if isinstance(a, list)] == [
        [{"jsonrpc": "2.0", "id": 9, "result": {}}]
    ]
    unset = by_id[10]["result"]  # no GT_TOKEN: said in the result, the server keeps serving
    assert unset["isError"] and "GT_TOKEN is not set" in unset["content"][0]["text"]
    assert unset["structuredContent"]["exit_code"] == 3
    assert "gt mcp: serving 13 tools" in log
    assert f"(rig: decided per call from {os.getcwd()} (GT_TOKEN is not set))" in log

    future = {**INITIALIZE, "params": {**INITIALIZE["params"], "protocolVersion": "2099-01-01"}}
    newest, _ = raw_session(future)
    assert newest[0]["result"]["protocolVersion"] == "2025-11-25"  # gt's newest
    old, _ = raw_session(
        {**INITIALIZE, "params": {**INITIALIZE["params"], "protocolVersion": "2024-11-05"}},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "ready"}},
        env={"GT_TOKEN": "gt_x"},
    )
    assert old[0]["result"]["protocolVersion"] == "2024-11-05"
    assert old[1]["result"]["isError"] and "structuredContent" not in old[1]["result"]


def test_usage_errors_name_the_tools_arguments():
    """Refused before any API call, in the words of the tool's schema, not of gt's flags."""

    def call(ident: int, name: str, arguments: dict) -> dict:
        params = {"name": name, "arguments": arguments}
        return {"jsonrpc": "2.0", "id": ident, "method": "tools/call", "params": params}

    answers, _ = raw_session(
        INITIALIZE,
        call(2, "ack", {}),
        call(3, "update", {"id": "gt-a1b2"}),
        call(4, "done", {"status": "deferred"}),
        call(5, "done", {"status": "deferred", "reason": "x", "force": True}),
        call(6, "done", {"reason": "x"}),
        call(7, "send", {"text": "hello"}),
        call(8, "update", {"id": "gt-a1b2", "status": "in_progress"}),
        env={"GT_TOKEN": "gt_x"},
    )
    text = {a["id"]: a["result"]["content"][0]["text"] for a in answers[1:]}
    assert all(a["result"]["isError"] for a in answers[1:])
    assert "give `id` (a notification's) or `all: true`, not both" in text[2]
    assert "give `status`, `title`, `priority`, `description` or `assignee`" in text[3]
    assert "say why: give `reason` with `status: deferred`" in text[4]
    assert "`status` ends your turn without a merge: `force` does not go with it" in text[5]
    assert "a `reason` goes with `status`" in text[6]
    assert "give `to` and `text` (or `reply_to` and `text`)" in text[7]
    assert "`status` must be one of open, blocked, deferred, closed" in text[8]
    assert not any("--" in t.split("(usage")[0] for t in text.values()), text


def test_tools_list_is_compact():
    """tools/list stays well under 2,000 tokens (estimated as characters / 4)."""
    answers, _ = raw_session(INITIALIZE, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    listed = json.dumps(answers[1], separators=(",", ":"))
    print(f"\ntools/list: {len(listed.encode())} bytes, ~{len(listed) // 4} tokens")
    assert len(listed) // 4 < 2000
    for tool in answers[1]["result"]["tools"]:
        schema = tool["inputSchema"]
        assert schema["type"] == "object" and schema["additionalProperties"] is False
        assert len(tool["description"]) <= 160


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker
def test_mcp_client_end_to_end(asgi_server, celery_worker, git_repo, monkeypatch):
    # the test drives the async SDK client and checks the database between calls
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    url = asgi_server
    repository = register(git_repo)
    agent, token = services.agent_create(name="mcp-agent")
    with transaction.atomic():
        rig = services.rig_request(repository=repository, slug="api", agent=agent)
    operations.rig_provision_run(rig.id)
    wait_rig_state(rig, Rig.State.READY, Rig.State.FAILED)
    assert rig.state == Rig.State.READY, rig.failure_reason
    # a second rig with work: only the worktree the server starts in says which rig is meant
    Rig.objects.create(
        repository=repository, slug="other", agent=agent, branch="rig/other",
        state=Rig.State.READY,
    )  # fmt: skip
    peer = services.agent_create(name="peer-agent")[0]
    Rig.objects.create(
        repository=repository, slug="peer", agent=peer, branch="rig/peer", state=Rig.State.READY
    )
    with transaction.atomic():
        convoy = convoy_services.convoy_create(
            title="Build auth",
            repository=repository,
            slug="auth",
            legs=[
                {
                    "key": "api",
                    "title": "API endpoints",
                    "rig": rig.id,
                    "description": "The login and logout endpoints, JSON in and out.",
                    "acceptance": ["POST /login answers a token", "tests pass"],
                }
            ],
        )
        convoy_services.convoy_launch(convoy=convoy)
    first = convoy_services.bead_create(title="Write the endpoint", rig=rig, priority=0)
    second = convoy_services.bead_create(title="Document it", rig=rig, priority=1)
    convoy_services.bead_dependency_add(bead=second, depends_on=first)
    worktree = Path(Rig.objects.get(pk=rig.pk).worktree_path)

    async def session() -> None:
        async with Client(server(url, token, worktree)) as client:
            assert client.protocol_version == "2025-11-25"
            assert client.server_info.name == "gastown"
            listed = await client.list_tools()
            tools = {tool.name: tool for tool in listed.tools}
            assert list(tools) == TOOLS
            assert tools["claim"].input_schema["required"] == ["id"]
            assert tools["close"].input_schema["properties"]["reason"] == {"type": "string"}
            update = tools["update"].input_schema["properties"]
            assert "in_progress" not in update["status"]["enum"] and "reason" in update
            assert tools["done"].input_schema["properties"]["status"]["enum"] == [
                "escalated",
                "deferred",
            ]

            prime = await client.call_tool("prime", {})
            assert not prime.is_error
            assert "# Gas Town briefing for agent mcp-agent" in text_of(prime)
            assert "Leg `api`" in text_of(prime)  # the worktree's rig, not `other`
            print(
                f"\ngt prime: {len(text_of(prime))} characters, ~{len(text_of(prime)) // 4} tokens"
            )
            ready = await client.call_tool("ready", {"limit": 5})
            assert text_of(ready).startswith(first.short_id), text_of(ready)
            assert second.short_id not in text_of(ready)
            assert ready.structured_content is None  # text only, unless --structured
            shown = await client.call_tool("show", {"id": second.short_id})
            assert "not ready" in text_of(shown) and first.short_id in text_of(shown)

            claimed = await client.call_tool("claim", {"id": first.short_id})
            assert text_of(claimed).startswith(f"claimed {first.short_id}")
            bead = Bead.objects.get(pk=first.pk)
            assert bead.status == "in_progress" and bead.assignee.name == "mcp-agent"

            # refusals by the API: tool results with isError, the API's message and code
            refused = await client.call_tool("claim", {"id": second.short_id})
            assert refused.is_error
            assert f"{second.short_id} is not ready" in text_of(refused)
            assert refused.structured_content["error"]["code"] == "not_ready"
            assert refused.structured_content["exit_code"] == 5
            missing = await client.call_tool("show", {"id": "gt-zzzzzz"})
            assert missing.is_error and missing.structured_content["exit_code"] == 4
            open_work = await client.call_tool("done", {})
            assert open_work.is_error
            assert open_work.structured_content["error"]["code"] == "open_work"
            assert first.short_id in text_of(open_work)
            assert not MergeRequest.objects.exists()
            with pytest.raises(MCPError) as unknown:  # a protocol error, not a tool's
                await client.call_tool("merge", {})
            assert unknown.value.error.code == -32602

            closed = await client.call_tool("close", {"id": first.short_id, "reason": "done"})
            assert f"closed {first.short_id}" in text_of(closed)
            assert second.short_id in text_of(closed)  # unblocked
            assert Bead.objects.get(pk=first.pk).close_reason == "done"

            inbox = await client.call_tool("inbox", {})
            ids = [int(n) for n in re.findall(r"^#(\d+) ", text_of(inbox), re.M)]
            assert ids and "unblocked" in text_of(inbox), text_of(inbox)
            acked = await client.call_tool("ack", {"id": ids[0]})
            assert text_of(acked).startswith(f"acknowledged #{ids[0]}")
            everything = await client.call_tool("ack", {"all": True})
            assert "acknowledged" in text_of(everything)
            assert text_of(await client.call_tool("inbox", {})) == "inbox empty"
            both = await client.call_tool("ack", {"id": ids[0], "all": True})
            assert both.is_error and "not both" in text_of(both)

            # the coordination verbs
            updated = await client.call_tool(
                "update", {"id": second.short_id, "priority": 0, "title": "Document the API"}
            )
            assert text_of(updated).startswith(f"updated {second.short_id}"), text_of(updated)
            assert Bead.objects.get(pk=second.pk).title == "Document the API"
            commented = await client.call_tool(
                "comment", {"id": second.short_id, "text": "mention the token format"}
            )
            assert text_of(commented).startswith(f"commented on {second.short_id}")
            shown = await client.call_tool("show", {"id": second.short_id})
            assert "mention the token format" in text_of(shown)
            sent = await client.call_tool("send", {"to": "rig:peer", "text": "api lands soon"})
            assert text_of(sent).startswith("sent to"), text_of(sent)
            message = Notification.objects.get(kind="message")
            assert message.rig.slug == "peer" and message.source_rig_id == rig.id
            itself = await client.call_tool("send", {"to": "rig:other", "text": "me?"})
            assert itself.is_error and "that is you" in text_of(itself)
            nobody = await client.call_tool("send", {"to": "rig:nope", "text": "hello?"})
            assert nobody.is_error and nobody.structured_content["exit_code"] in (2, 4)
            asked = await client.call_tool(
                "escalate", {"text": "Which token format?", "bead": second.short_id}
            )
            assert text_of(asked).startswith("escalated as #"), text_of(asked)
            escalation = Notification.objects.get(kind="escalation")
            assert escalation.rig_id == rig.id and escalation.severity == "critical"
            why = await client.call_tool("done", {"status": "deferred"})
            assert why.is_error and "say why" in text_of(why)
            deferred = await client.call_tool(
                "done", {"status": "deferred", "reason": "waiting for the answer"}
            )
            assert text_of(deferred).startswith("turn ended (deferred)"), text_of(deferred)
            assert not MergeRequest.objects.exists()

            await client.call_tool("claim", {"id": second.short_id})
            closing = await client.call_tool(
                "update", {"id": second.short_id, "status": "closed", "reason": "documented"}
            )
            assert not closing.is_error, text_of(closing)
            assert Bead.objects.get(pk=second.pk).close_reason == "documented"
            commit_file(worktree, "api/endpoint.py", "def endpoint():\n    return 1\n")
            done = await client.call_tool("done", {"priority": 1})
            assert not done.is_error, text_of(done)
            match = re.match(r"merge request #(\d+) (\w+): rig/api -> main", text_of(done))
            assert match, text_of(done)
            merge = MergeRequest.objects.get(pk=int(match[1]))
            wait_for(
                lambda: MergeRequest.objects.get(pk=merge.pk).state == "merged", 120,
                message="the merge queue",
            )  # fmt: skip
            finished = await client.call_tool("prime", {})
            assert "## Stop: your work in this rig is finished" in text_of(finished)

        # --structured: the API's JSON too
        async with Client(server(url, token, worktree, "--structured")) as client:
            shown = await client.call_tool("show", {"id": first.short_id})
            assert shown.structured_content["short_id"] == first.short_id
            assert shown.structured_content["status"] == "closed"

    anyio.run(session)


def test_claude_code_and_codex_take_the_registration(tmp_path):
    """The real CLIs (pinned in package.json): `claude mcp add` as docs/cli.md says, and
    Claude Code's health check then connects to `gt mcp` (initialize, tools/list); Codex reads
    the documented `[mcp_servers.gastown]` table."""
    from common import process

    clis = process.AGENT_CLI_DIR / ".bin"
    if not (clis / "claude").exists() or not (clis / "codex").exists():
        if os.environ.get("CI"):
            pytest.fail(f"{clis} lacks claude or codex: `make agent-clis` installs them")
        pytest.skip("the agent CLIs are not installed: run `make agent-clis`")
    env = {
        "PATH": f"{GT.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(tmp_path),
        "NO_COLOR": "1",
    }

    def run(*argv: str, **extra: str) -> str:
        done = subprocess.run(
            [*argv], cwd=tmp_path, env={**env, **extra}, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, (argv, done.stdout, done.stderr)
        return done.stdout

    run(str(clis / "claude"), "mcp", "add", "gastown", "-e", "GT_URL=http://127.0.0.1:9",
        "-e", "GT_TOKEN=gt_x", "--", "gt", "mcp")  # fmt: skip
    assert re.search(r"gastown: gt mcp - \S* ?Connected", run(str(clis / "claude"), "mcp", "list"))

    home = tmp_path / "codex"
    home.mkdir()
    (home / "config.toml").write_text(
        '[mcp_servers.gastown]\ncommand = "gt"\nargs = ["mcp"]\n'
        'env_vars = ["GT_URL", "GT_TOKEN", "GT_RIG"]\n'
    )
    found = json.loads(run(str(clis / "codex"), "mcp", "get", "gastown", "--json",
                           CODEX_HOME=str(home)))  # fmt: skip
    assert found["enabled"] and found["transport"]["command"] == "gt"
    assert found["transport"]["args"] == ["mcp"]
    assert found["transport"]["env_vars"] == ["GT_URL", "GT_TOKEN", "GT_RIG"]
