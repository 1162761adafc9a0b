"""The claude and codex presets against the real CLIs (pinned in package.json, installed by
`make agent-clis` into node_modules/): every flag they use is one the installed CLI knows; a
run of each with no API key fails at start and is escalated once with the CLI's own error; the
hooks re-prime the agent through `gt prime --hook`. No model is called (there is no key)."""

import json
import os
import re
import shlex
import signal
import subprocess
from pathlib import Path

import pytest

from common import process
from notifications.models import Notification
from rigs import services as rig_services
from runner import presets, rules, services
from runner.models import AgentRun
from tests.rigs.helpers import register, wait_for, wait_rig_state
from tests.runner.conftest import wait_run

CLI_BIN = process.AGENT_CLI_DIR / ".bin"
CLAUDE_BIN, CODEX_BIN = CLI_BIN / "claude", CLI_BIN / "codex"
S = AgentRun.State
GATE = """.venv/bin/python -m pytest -q -k "not slow" && make lint"""
SETUP = "pip install -r requirements.txt; echo 'it''s ready' # done"


def _installed(path: Path) -> bool:
    if path.exists():
        return True
    if os.environ.get("CI"):
        pytest.fail(f"{path} is missing: `make agent-clis` (part of `make install`) installs it")
    pytest.skip(f"{path} is not installed: run `make agent-clis`")
    return False


@pytest.fixture
def claude_bin() -> Path:
    _installed(CLAUDE_BIN)
    return CLAUDE_BIN


@pytest.fixture
def codex_bin() -> Path:
    _installed(CODEX_BIN)
    return CODEX_BIN


def _help(*argv: str) -> str:
    done = subprocess.run(
        [*map(str, argv), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ["PATH"], "HOME": "/nonexistent", "NO_COLOR": "1"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _flag_sections(help_text: str) -> dict[str, str]:
    """Each option of a --help text with its description (up to the next option)."""
    sections: dict[str, str] = {}
    current: list[str] = []
    for line in help_text.splitlines():
        if re.match(r"^\s{1,8}-", line):
            current = []
            names = line.strip().split("  ")[0]  # `-p, --print` before its description
            for name in re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", names):
                sections[name] = ""
                current.append(name)
        for name in current:
            sections[name] += line + "\n"
    return sections


def _flags(command: str) -> tuple[list[str], list[tuple[str, str | None]]]:
    """(the CLI and its subcommand, [(flag, its value or None)]) of a preset command line."""
    words = shlex.split(command)
    cli = [words.pop(0)]
    if words and not words[0].startswith("-"):
        cli.append(words.pop(0))  # `codex exec`
    flags = []
    for i, word in enumerate(words):
        if word.startswith("-"):
            name, _, inline = word.partition("=")
            following = words[i + 1] if i + 1 < len(words) else None
            value = inline or (following if following and not following.startswith("-") else None)
            flags.append((name, value))
    return cli, flags


PRESETS = {
    "claude": lambda: presets.claude_command(gate_command=GATE, setup_command=SETUP),
    "codex (sandboxed)": lambda: presets.codex_command(sandboxed=True),
    "codex (no sandbox)": lambda: presets.codex_command(sandboxed=False),
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_flag_is_in_the_installed_cli_help(name):
    command = PRESETS[name]()
    cli, flags = _flags(command)
    binary = _installed(CLI_BIN / cli[0]) and CLI_BIN / cli[0]
    sections = _flag_sections(_help(binary, *cli[1:]))
    assert flags, command
    for flag, value in flags:
        assert flag in sections, (
            f"{' '.join(cli)} has no {flag} (its --help lists {sorted(sections)})"
        )
        section = sections[flag]
        if value is not None and re.search(r"choices:|possible values:", section):
            # a flag with a fixed set of values: the preset's is one of them
            assert re.search(rf"[\s\"',]{re.escape(value)}[\s\"',)\]]", section), (flag, value)


def test_the_presets_checked_are_the_ones_launched(settings):
    """What an agent with no command of its own runs is what the help test checked."""
    repository = type("Repository", (), {"gate_command": GATE, "setup_command": SETUP})()
    claude = type("Agent", (), {"runtime": "claude", "runtime_command": ""})()
    codex = type("Agent", (), {"runtime": "codex", "runtime_command": ""})()
    assert rules.agent_runtime_command(claude, repository) == PRESETS["claude"]()
    settings.GASTOWN_SANDBOX = "bwrap"
    assert rules.agent_runtime_command(codex, repository) == PRESETS["codex (sandboxed)"]()
    settings.GASTOWN_SANDBOX = "none"
    assert rules.agent_runtime_command(codex, repository) == PRESETS["codex (no sandbox)"]()


def test_allowed_tools_follow_the_gate_and_setup_commands_each_one_shell_word():
    assert presets.shell_parts(GATE) == [
        '.venv/bin/python -m pytest -q -k "not slow"',
        "make lint",
    ]
    assert presets.shell_parts(SETUP) == ["pip install -r requirements.txt", "echo 'it''s ready'"]
    assert presets.shell_parts("a 'x && y' | b \\; c || d\ne") == [
        "a 'x && y'",
        "b \\; c",
        "d",
        "e",
    ]
    rules_ = presets.claude_allowed_tools(GATE, SETUP, "")
    assert rules_[:2] == ["Bash(gt *)", "Bash(git *)"]
    assert 'Bash(.venv/bin/python -m pytest -q -k "not slow" *)' in rules_
    assert "Bash(make lint)" in rules_ and "Bash(make lint *)" in rules_
    assert "Bash(echo 'it''s ready' *)" in rules_
    # /bin/sh hands each rule to claude as one argument, exactly as written (a stand-in claude
    # prints its arguments; nothing in the commands is run)
    command = presets.claude_command(gate_command=GATE + "; $(touch pwned)", setup_command=SETUP)
    stand_ins = "claude() { printf '%s\\n' \"$@\"; }; gt() { echo BRIEF; }; "
    shown = subprocess.run(
        ["/bin/sh", "-c", stand_ins + command],
        capture_output=True, text=True, timeout=10, check=True, cwd="/tmp",
    ).stdout.splitlines()  # fmt: skip
    assert shown[:2] == ["-p", "BRIEF"]
    assert shown[shown.index("--allowedTools") + 1 :] == presets.claude_allowed_tools(
        GATE + "; $(touch pwned)", SETUP
    )
    assert "Bash($(touch pwned))" in shown and not Path("/tmp/pwned").exists()


def test_a_start_failure_is_told_from_a_failure_after_work():
    from runner.startup import StartWatch

    claude = StartWatch(start_seconds=30, cli=True)
    claude.line('{"type":"system","subtype":"init","apiKeySource":"none"}')
    claude.line('{"type":"result","is_error":true,"result":"Not logged in · Please run /login"}')
    assert claude.failed_at_start(1, 0.7) == "Not logged in · Please run /login"
    assert claude.failed_at_start(0, 0.7)  # older versions exit 0 on it
    worked = StartWatch(start_seconds=30, cli=True)
    worked.line('{"type":"assistant","message":{"model":"claude-x","content":[]}}')
    worked.line('{"type":"result","is_error":true,"result":"API Error: 500"}')
    assert worked.failed_at_start(1, 5) == ""  # restarted as usual
    codex = StartWatch(start_seconds=30, cli=True)
    assert codex.line("ERROR: Reconnecting... 2/5") == ""
    assert codex.line("ERROR: Reconnecting... waiting for network") != ""
    missing = StartWatch(start_seconds=30, cli=True)
    missing.line("/bin/sh: 1: claude: not found")
    assert missing.failed_at_start(127, 0.1) == "/bin/sh: 1: claude: not found"
    assert missing.failed_at_start(127, 31) == ""  # past the start window
    custom = StartWatch(start_seconds=30, cli=False)
    custom.line("boom")
    assert custom.failed_at_start(3, 0.1) == ""  # a custom command's crash is restarted
    clock = iter(range(0, 10_000, 3)).__next__  # a line every 3 s
    stuck = StartWatch(start_seconds=30, cli=False, clock=clock)
    stuck.usage_seen()
    for n in range(40):
        stuck.line(f"2026-01-01T00:00:{n:02d}Z ERROR connection refused (attempt {n})")
    assert stuck.stuck.startswith("the same error 30 times with no progress: 2026")
    # a test run that prints a hundred failures at once is no retry loop
    burst = StartWatch(start_seconds=30, cli=False, clock=lambda: 5.0)
    for n in range(100):
        burst.line(f"ERROR tests/test_a.py::test_{n} - AssertionError")
    assert burst.stuck == ""


# --- real runs of the presets, with no key -------------------------------------------------------


@pytest.fixture
def no_model_keys(monkeypatch):
    """No key reaches the worker (and so the agents): the CLIs fail as they do without one."""
    for name in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def cli_rig(no_model_keys, git_repo, runner_worker):
    """cli_rig(runtime): a provisioned rig whose agent runs the runtime's preset, on a
    repository with a gate and a setup command; returns (rig, the agent's token)."""
    repository = register(git_repo, gate_command="true && echo gate", setup_command="true")

    def make(runtime: str):
        agent, token = rig_services.agent_create(name=f"{runtime}-1", runtime=runtime)
        rig = rig_services.rig_request(repository=repository, slug=f"{runtime}-rig", agent=agent)
        return wait_rig_state(rig, "ready", timeout=60), token

    return make


def _escalated_once(rig, run) -> Notification:
    wait_for(lambda: AgentRun.objects.get(pk=run.pk).escalated_at, 30, message="escalated")
    note = Notification.objects.get(rig=rig, kind=Notification.Kind.ESCALATION)
    assert AgentRun.objects.filter(rig=rig).count() == 1  # not restarted
    return note


def _git_status(worktree: str) -> str:
    return subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=worktree, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


@pytest.mark.worker
def test_claude_without_a_key_fails_at_start_and_says_why_then_its_hook_reprimes(
    claude_bin, cli_rig, asgi_server
):
    rig, token = cli_rig("claude")
    run = services.agent_run_request(rig=rig, requested_by="test")
    assert "'Bash(true)'" in run.command and "'Bash(echo gate *)'" in run.command
    wait_run(run, S.FAILED, timeout=60)
    assert run.reason.startswith("failed at start (exited with code 1 after ")
    assert "Not logged in" in run.reason
    assert (run.finished_at - run.started_at).total_seconds() < 30
    note = _escalated_once(rig, run)
    assert note.severity == Notification.Severity.CRITICAL
    assert "Not logged in · Please run /login" in note.summary
    assert "not restarted" in note.summary
    assert note.changes["exit_code"] == 1  # it ended by itself, with its own result line
    assert note.changes["log_tail"][-1] == (
        '{"type":"result","subtype":"success","is_error":true,'
        '"result":"Not logged in · Please run /login"}'
    )
    assert "last lines of run" in note.action and "Not logged in" in note.action
    log = Path(run.log_path).read_text()
    assert "# gastown: Claude Code hooks in .claude/settings.local.json" in log
    assert '"apiKeySource":"none"' in log  # the CLI ran (in the sandbox) and found no key

    # the hooks are in the worktree's local settings, which git does not see
    settings_file = Path(rig.worktree_path) / ".claude" / "settings.local.json"
    hooks = json.loads(settings_file.read_text())["hooks"]
    assert hooks["SessionStart"][0]["matcher"] == "compact|resume|clear"
    assert hooks["SessionStart"][0]["hooks"][0]["command"] == "gt prime --hook"
    assert hooks["PreCompact"][0]["hooks"][0]["command"] == "gt prime --hook"
    assert _git_status(rig.worktree_path) == ""

    # Resuming the session fires SessionStart (source "resume", as "compact" would): the real
    # claude runs `gt prime --hook`, which answers with the briefing as additionalContext.
    session = next(
        json.loads(line)["session_id"] for line in log.splitlines() if '"session_id"' in line
    )
    env = {
        "PATH": f"{process.BIN_DIR}:{CLI_BIN}:/usr/bin:/bin",
        "HOME": str(process.agent_home(rig.id)),
        "GT_URL": asgi_server,
        "GT_TOKEN": token,
        "GT_RIG": str(rig.id),
    }
    resumed = subprocess.run(
        [claude_bin, "-p", "--resume", session, "go on", "--output-format", "stream-json",
         "--verbose", "--include-hook-events"],
        cwd=rig.worktree_path, env=env, capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    responses = [
        json.loads(line)
        for line in resumed.stdout.splitlines()
        if '"subtype":"hook_response"' in line
    ]
    assert responses, resumed.stdout[-2000:]
    answer = json.loads(responses[0]["output"])["hookSpecificOutput"]
    assert answer["hookEventName"] == "SessionStart"
    assert answer["additionalContext"].startswith("# Gas Town briefing for agent claude-1")


@pytest.mark.worker
@pytest.mark.runner_env(GASTOWN_RUN_STOP_GRACE_SECONDS="3")
def test_codex_without_a_key_or_network_is_stopped_at_start_and_says_why_then_its_hook_reprimes(
    codex_bin, cli_rig, asgi_server
):
    rig, token = cli_rig("codex")
    run = services.agent_run_request(rig=rig, requested_by="test")
    assert run.command.startswith("codex exec --sandbox danger-full-access")
    wait_run(run, S.FAILED, timeout=90)  # it would wait for the network for ever
    assert "waiting for network" in run.reason and run.reason.startswith("failed at start")
    note = _escalated_once(rig, run)
    assert "Reconnecting... waiting for network" in note.summary
    assert any("Reconnecting" in line for line in note.changes["log_tail"])
    log = Path(run.log_path).read_text()
    assert "OpenAI Codex v" in log and "sandbox: danger-full-access" in log
    assert "# gastown: stopping the agent: ERROR: Reconnecting... waiting for network" in log
    hooks = json.loads((process.agent_home(rig.id) / ".codex" / "hooks.json").read_text())
    assert hooks["hooks"]["SessionStart"][0]["hooks"][0]["command"] == "gt prime --hook"
    wait_for(lambda: not process.run_processes(run.id), 15, message="nothing left running")
    assert _git_status(rig.worktree_path) == ""

    # Resuming the session fires SessionStart (source "resume", as "compact" would): the real
    # codex runs `gt prime --hook` and adds its additionalContext to the session (a developer
    # message in the session's rollout, in the rig's home).
    session = re.search(r"^session id: (\S+)$", log, re.MULTILINE)[1]
    home = process.agent_home(rig.id)
    resumed = subprocess.Popen(
        [codex_bin, "exec", "--sandbox", "danger-full-access", "--dangerously-bypass-hook-trust",
         "resume", session, "go on"],
        cwd=rig.worktree_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
        env={"PATH": f"{process.BIN_DIR}:{CLI_BIN}:/usr/bin:/bin", "HOME": str(home),
             "GT_URL": asgi_server, "GT_TOKEN": token, "GT_RIG": str(rig.id)},
    )  # fmt: skip

    def briefed() -> bool:
        for rollout in (home / ".codex" / "sessions").rglob(f"*{session}.jsonl"):
            for line in rollout.read_text().splitlines():
                item = json.loads(line).get("payload") or {}
                if item.get("type") == "message" and item.get("role") == "developer":
                    texts = [c.get("text", "") for c in item.get("content") or []]
                    if any(t.startswith("# Gas Town briefing for agent codex-1") for t in texts):
                        return True
        return False

    try:
        wait_for(briefed, 45, message="the briefing added by the SessionStart hook")
    finally:
        os.killpg(resumed.pid, signal.SIGKILL)
        resumed.wait()


def test_gt_prime_hook_answers_each_event(tmp_path):
    """`gt prime --hook` without a server: PreCompact needs none; SessionStart says the error
    as context and exits 0 (a hook's exit 2 would block a compaction)."""
    env = {
        "PATH": os.environ["PATH"],
        "GT_URL": "http://127.0.0.1:9",
        "GT_TOKEN": "x",
        "GT_RIG": "7",
    }
    gt = str(process.BIN_DIR / "gt")

    def hook(event: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [gt, "prime", "--hook"], input=json.dumps({"hook_event_name": event}),
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    pre = hook("PreCompact")
    assert pre.returncode == 0 and "rig 7" in pre.stdout and "In the summary keep" in pre.stdout
    start = hook("SessionStart")
    assert start.returncode == 0, start.stderr
    answer = json.loads(start.stdout)["hookSpecificOutput"]
    assert answer["hookEventName"] == "SessionStart"
    assert "the briefing could not be read" in answer["additionalContext"]


def test_hook_files_keep_what_was_there_and_refuse_planted_links(tmp_path):
    worktree = tmp_path / "wt"
    (worktree / ".claude").mkdir(parents=True)
    (worktree / ".claude" / "settings.local.json").write_text(
        json.dumps({"permissions": {"allow": ["Read"]}, "hooks": {"Stop": [{"hooks": []}]}})
    )
    common = tmp_path / "git"
    common.mkdir()
    for _ in range(2):  # idempotent
        presets.claude_settings_install(worktree, common)
    data = json.loads((worktree / ".claude" / "settings.local.json").read_text())
    assert data["permissions"] == {"allow": ["Read"]} and "Stop" in data["hooks"]
    assert len(data["hooks"]["SessionStart"]) == 1 and len(data["hooks"]["PreCompact"]) == 1
    assert (common / "info" / "exclude").read_text() == "/.claude/settings.local.json\n"
    # an agent that made .claude a link to somewhere else gets nothing written there
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    planted = tmp_path / "wt2"
    planted.mkdir()
    (planted / ".claude").symlink_to(elsewhere)
    assert "not a directory" in presets.claude_settings_install(planted, None)
    assert not list(elsewhere.iterdir())
    home = tmp_path / "home"
    home.mkdir()
    (home / ".codex").symlink_to(elsewhere)
    assert "not a directory" in presets.codex_hooks_install(home)
    assert not list(elsewhere.iterdir())
