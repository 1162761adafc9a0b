"""A repository's own commands (its gate and its setup command) run on code from a rig's
branch, so they run as untrusted code: through `common.process.command_run`, with the
allow-listed environment (never the server's secrets), a HOME of their own, and a sandbox that
sees the checkout they run in and the git directories that checkout needs, and nothing else of
the data dir, the repository roots or other rigs' worktrees.

What git needs inside a linked worktree (checked under bubblewrap): the worktree's `.git` file
names its admin dir `<common>/worktrees/<name>` (HEAD, index, and the index lock `git status`
takes), whose `commondir` points at the repository's common git dir (objects, refs, config).
So the checkout and its admin dir are bound read-write and the common dir read-only: `git
status`, `git log` and `git diff` work; writing objects (a commit) does not, which a gate or a
setup command has no need for.
"""

import tempfile
from collections.abc import Iterable
from pathlib import Path

from common.process import CommandResult, Sandbox, command_environment, command_run, secrets_scrub
from common.sandbox import admin_dir_pinned, git_dirs


def checkout_sandbox(
    checkout: Path, *, writable: Iterable[Path] = (), readable: Iterable[Path] = ()
) -> Sandbox:
    """The sandbox of a command that runs in `checkout`: it, its git admin dir (and `writable`)
    read-write; the repository's common git dir (and `readable`) read-only, and so are the
    files that would redirect or reconfigure the server's next git command there (the
    checkout's `.git` file, the admin dir's `commondir`, `gitdir` and `config.worktree`)."""
    rw = [checkout, *writable]
    ro = list(readable)
    dirs = git_dirs(checkout)
    if dirs is not None:
        admin, common = dirs
        ro.insert(0, common)
        if admin != common:
            rw.append(admin)
            ro += [checkout / ".git", *admin_dir_pinned(admin)]
    return Sandbox(
        writable=tuple(dict.fromkeys(str(p) for p in rw)),
        readable=tuple(dict.fromkeys(str(p) for p in ro)),
    )


def checkout_command_run(
    command: str,
    *,
    checkout: Path,
    variables: dict[str, str],
    timeout: float,
    readable: Iterable[Path] = (),
) -> CommandResult:
    """Run an admin-configured command in `checkout`, sandboxed, with `variables` (GASTOWN_*)
    on top of the allow-listed environment and a private, throwaway HOME. The output is scrubbed
    of the server's secret values (a second line of defence: they are not in its environment)."""
    with tempfile.TemporaryDirectory(prefix="gastown-home-", ignore_cleanup_errors=True) as home:
        env = command_environment(variables, home=home)
        sandbox = checkout_sandbox(checkout, writable=[Path(home)], readable=readable)
        result = command_run(command, cwd=checkout, env=env, timeout=timeout, sandbox=sandbox)
    result.output = secrets_scrub(result.output)
    return result
