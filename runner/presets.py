"""The real agent CLIs the runner launches (Claude Code, Codex): their preset commands, the tools
they may use, and the hook that re-primes them after a context compaction.

The versions these were checked against are pinned in package.json (`make agent-clis` installs
them under node_modules/, whose .bin/ is on agents' PATH); tests/runner/test_presets.py checks
every flag used here against the installed CLI's `--help`. docs/runner.md has the recipe.

- Claude Code: `claude -p "$(gt prime)" --output-format stream-json --verbose --permission-mode
  acceptEdits --allowedTools ...`. With -p nobody answers a permission prompt, so a shell command
  runs only when an allow rule names it: `gt`, `git`, and the repository's gate and setup
  commands (each simple command of them, as its admin wrote it). A `SessionStart` hook (after a
  compaction, a resume or a /clear) and a `PreCompact` hook run `gt prime --hook`, written into
  the worktree's `.claude/settings.local.json`, which the repository's `info/exclude` keeps out
  of commits.
- Codex: `codex exec --sandbox danger-full-access ...` inside Gas Town's bubblewrap sandbox (the
  sandbox is the boundary there, and Codex's own cannot start inside it: nested user namespaces
  are refused), `--sandbox workspace-write` with the git dir added and the network on when Gas
  Town runs agents unsandboxed. Its `SessionStart` hook is written into the rig's own
  `$HOME/.codex/hooks.json` (outside the worktree), and run without Codex's per-hook review
  (`--dangerously-bypass-hook-trust`: every hook runs inside the same sandbox as the agent).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
from pathlib import Path

CLAUDE, CODEX = "claude", "codex"
# What the hooks run: the briefing, in the form the hook's event expects (bin/gt, cmd_prime).
HOOK_COMMAND = "gt prime --hook"
# SessionStart sources that come after the prompt was read: its briefing may be gone.
REPRIME_SOURCES = "compact|resume|clear"
CLAUDE_BASE_TOOLS = ("Bash(gt *)", "Bash(git *)")
CLAUDE_SETTINGS = Path(".claude") / "settings.local.json"
EXCLUDE_LINE = "/" + CLAUDE_SETTINGS.as_posix()
# Separators of simple commands in a shell command line (outside quotes).
_OPERATORS = ("&&", "||", ";", "|", "&", "\n")


def shell_parts(command: str) -> list[str]:
    """The simple commands of a shell command line, as written (`make lint && pytest -q` →
    `make lint`, `pytest -q`): split at `&&`, `||`, `;`, `|`, `&` and newlines outside quotes,
    stripped, comments and empty parts dropped. Claude Code checks each simple command of a
    compound one against its rules, so each gets its own rule."""
    parts: list[str] = []
    current: list[str] = []
    quote = ""
    i = 0
    while i < len(command):
        char = command[i]
        if quote:
            current.append(char)
            if char == "\\" and quote == '"' and i + 1 < len(command):
                current.append(command[i + 1])
                i += 1
            elif char == quote:
                quote = ""
        elif char == "\\" and i + 1 < len(command):
            current += [char, command[i + 1]]
            i += 1
        elif char in "'\"":
            quote = char
            current.append(char)
        elif char == "#" and (not current or current[-1].isspace()):
            while i < len(command) and command[i] != "\n":
                i += 1
            continue
        elif operator := next((op for op in _OPERATORS if command.startswith(op, i)), ""):
            parts.append("".join(current))
            current = []
            i += len(operator)
            continue
        else:
            current.append(char)
        i += 1
    parts.append("".join(current))
    return [" ".join(part.split()) for part in parts if part.strip()]


def claude_allowed_tools(*commands: str) -> list[str]:
    """Claude Code allow rules: `gt` and `git` with any arguments, and each simple command of
    the given (admin-set) commands, alone or with more arguments (`Bash(pytest -q)`,
    `Bash(pytest -q *)`: a space before the `*` keeps `pytest -qx` out)."""
    rules = list(CLAUDE_BASE_TOOLS)
    for command in commands:
        for part in shell_parts(command or ""):
            for rule in (f"Bash({part})", f"Bash({part} *)"):
                if rule not in rules:
                    rules.append(rule)
    return rules


def claude_command(*, gate_command: str = "", setup_command: str = "") -> str:
    """The `claude` preset: the briefing as the prompt, stream-json (output keeps flowing, and
    its result line carries the cost and any error), file edits accepted, the allowed tools.
    Each rule is one shell word, quoted for /bin/sh (the commands are admins', quoted anyway)."""
    rules = claude_allowed_tools(gate_command, setup_command)
    return (
        'claude -p "$(gt prime)" --output-format stream-json --verbose '
        "--permission-mode acceptEdits --allowedTools " + " ".join(map(shlex.quote, rules))
    )


def codex_command(*, sandboxed: bool) -> str:
    """The `codex` preset. Inside Gas Town's sandbox Codex's own is off (it cannot start there);
    unsandboxed, its workspace sandbox gets the repository's git dir (a commit in a linked
    worktree writes there) and the network (gt must reach Gas Town)."""
    if sandboxed:
        policy = "--sandbox danger-full-access"
    else:
        policy = (
            "--sandbox workspace-write -c sandbox_workspace_write.network_access=true "
            '--add-dir "$(git rev-parse --path-format=absolute --git-common-dir)"'
        )
    return f'codex exec {policy} --dangerously-bypass-hook-trust "$(gt prime)"'


def preset_command(
    runtime: str, *, gate_command: str = "", setup_command: str = "", sandboxed: bool = True
) -> str | None:
    """The command of a CLI runtime's preset (None: not a CLI runtime)."""
    if runtime == CLAUDE:
        return claude_command(gate_command=gate_command, setup_command=setup_command)
    if runtime == CODEX:
        return codex_command(sandboxed=sandboxed)
    return None


def command_cli(command: str) -> str:
    """Which known CLI a command line starts (`claude`, `codex`, or '')."""
    try:
        words = shlex.split(command)
    except ValueError:
        return ""
    while words and "=" in words[0] and not words[0].startswith("="):
        words = words[1:]  # `FOO=1 claude ...`
    name = os.path.basename(words[0]) if words else ""
    return name if name in (CLAUDE, CODEX) else ""


# --- what a run's CLI finds when it starts -------------------------------------------------------


def hook_settings() -> dict:
    """The hooks (Claude Code's settings and Codex's hooks.json share this shape): after a
    compaction (or a resume, a /clear) the briefing is added again as context; before a
    compaction, Claude Code is asked to keep the work in progress in its summary."""
    group = {"type": "command", "command": HOOK_COMMAND, "timeout": 30}
    return {
        "SessionStart": [{"matcher": REPRIME_SOURCES, "hooks": [group]}],
        "PreCompact": [{"matcher": "manual|auto", "hooks": [group]}],
    }


def _merged_hooks(existing: dict, events: tuple[str, ...]) -> dict:
    """``existing`` settings with Gas Town's hooks for ``events`` in place of any earlier copy
    of them (other hooks and settings are kept)."""
    settings = dict(existing)
    hooks = dict(settings.get("hooks") or {}) if isinstance(settings.get("hooks"), dict) else {}
    for event, groups in hook_settings().items():
        if event not in events:
            continue
        kept = [
            g
            for g in hooks.get(event) or []
            if not (
                isinstance(g, dict)
                and any(
                    isinstance(h, dict) and h.get("command") == HOOK_COMMAND
                    for h in g.get("hooks") or []
                )
            )
        ]
        hooks[event] = kept + groups
    settings["hooks"] = hooks
    return settings


def _open_dir(path: Path, *, create: bool) -> int | None:
    """A directory's descriptor, refusing a symlink anywhere it is opened (the worktree is the
    agent's: a planted link must not send the server's writes elsewhere)."""
    if create:
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o755)
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return None


def _read_json(dir_fd: int, name: str) -> dict:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError:
        return {}
    with os.fdopen(fd, "rb") as handle:
        try:
            data = json.loads(handle.read(1024 * 1024) or b"{}")
        except ValueError:
            return {}
    return data if isinstance(data, dict) else {}


def _write(dir_fd: int, name: str, text: str, *, append: bool = False) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(name, flags, 0o644, dir_fd=dir_fd)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def claude_settings_install(worktree: str | Path, git_common_dir: Path | None) -> str:
    """Write Gas Town's hooks into the worktree's `.claude/settings.local.json` (kept: whatever
    else is there) and keep that file out of commits through the repository's `info/exclude`
    (read by every worktree's git, the server's and the agent's). Returns what was done, or why
    not, for the run's log."""
    worktree = Path(worktree)
    top = _open_dir(worktree, create=False)
    if top is None:
        return "no worktree to write the hooks into"
    try:
        os.mkdir(".claude", 0o755, dir_fd=top)
    except FileExistsError:
        pass
    except OSError as exc:
        os.close(top)
        return f"hooks not installed: {exc}"
    try:
        claude = os.open(".claude", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=top)
    except OSError:
        os.close(top)
        return "hooks not installed: .claude is not a directory"
    os.close(top)
    try:
        existing = _read_json(claude, CLAUDE_SETTINGS.name)
        settings = _merged_hooks(existing, ("SessionStart", "PreCompact"))
        _write(claude, CLAUDE_SETTINGS.name, json.dumps(settings, indent=2) + "\n")
    except OSError as exc:
        return f"hooks not installed: {exc}"
    finally:
        os.close(claude)
    if git_common_dir is not None:
        exclude_add(Path(git_common_dir), EXCLUDE_LINE)
    return f"Claude Code hooks in {CLAUDE_SETTINGS} (SessionStart {REPRIME_SOURCES}, PreCompact)"


def exclude_add(git_common_dir: Path, line: str) -> None:
    """Add ``line`` to the repository's `info/exclude` unless it is there."""
    info = _open_dir(git_common_dir / "info", create=True)
    if info is None:
        return
    try:
        with contextlib.suppress(OSError):
            try:
                fd = os.open("exclude", os.O_RDONLY | os.O_NOFOLLOW, dir_fd=info)
                with os.fdopen(fd, "rb") as handle:
                    current = handle.read(1024 * 1024).decode("utf-8", "replace")
            except FileNotFoundError:
                current = ""
            if line not in current.splitlines():
                sep = "" if not current or current.endswith("\n") else "\n"
                _write(info, "exclude", f"{sep}{line}\n", append=True)
    finally:
        os.close(info)


def codex_hooks_install(home: str | Path) -> str:
    """Write Gas Town's SessionStart hook into the rig's `$HOME/.codex/hooks.json` (the rig's
    private home, never committed). Codex has no PreCompact summary instructions to take."""
    codex = _open_dir(Path(home) / ".codex", create=True)
    if codex is None:
        return "hooks not installed: .codex is not a directory"
    try:
        settings = _merged_hooks(_read_json(codex, "hooks.json"), ("SessionStart",))
        _write(codex, "hooks.json", json.dumps(settings, indent=2) + "\n")
    except OSError as exc:
        return f"hooks not installed: {exc}"
    finally:
        os.close(codex)
    return f"Codex hooks in $HOME/.codex/hooks.json (SessionStart {REPRIME_SOURCES})"


def cli_prepare(cli: str, *, worktree: str, home: str, git_common_dir: Path | None) -> str:
    """Before a run of ``cli`` starts: its hooks. Returns a line for the run's log ('' for
    none); a failure is said there, and the run goes on without them."""
    try:
        if cli == CLAUDE:
            return claude_settings_install(worktree, git_common_dir)
        if cli == CODEX:
            return codex_hooks_install(home)
    except OSError as exc:
        return f"hooks not installed: {exc}"
    return ""


def preset_cli(runtime: str) -> str:
    """The CLI an agent's runtime runs (`claude`, `codex`, or '')."""
    return runtime if runtime in (CLAUDE, CODEX) else ""
