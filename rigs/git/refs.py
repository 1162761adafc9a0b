"""Repositories, revisions and refs: names checked before they reach git, revisions resolved
behind ``--end-of-options``, refs moved only by compare-and-swap (:func:`update_ref`), and the
counts between two commits (ahead/behind, ancestry, commit lists)."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from rigs.git.run import (
    _OID,
    DEFAULT_TIMEOUT,
    ZERO_OID,
    GitError,
    InvalidRefName,
    RefMoved,
    StrPath,
    _execute,
    _failure,
    _ok,
    run,
)

_REF_RULES = [
    (r"^-", "must not start with '-'"),
    (r"\.\.", "must not contain '..'"),
    (r"\s", "must not contain whitespace"),
    (r"[\x00-\x1f\x7f]", "must not contain control characters"),
    (r"[~^:?*\[\\]", "must not contain any of ~ ^ : ? * [ \\"),
    (r"@\{", "must not contain '@{'"),
    (r"(\.lock|/|\.)$", "must not end with '.lock', '/' or '.'"),
    # The rest of git's check-ref-format rules, so that no git process is needed to check.
    (r"(^|/)\.", "no part may start with '.'"),
    (r"\.lock/", "no part may end with '.lock'"),
    (r"^/|//", "must not start with '/' or contain '//'"),
    (r"^HEAD$", "must not be 'HEAD'"),
    (r"^@?$", "must not be empty or '@'"),
    (r"^.{201}", "must be at most 200 characters"),
    # Stricter than git: no shell, quoting or URL metacharacters at all.
    (r"[^A-Za-z0-9._/+=,@-]", "may only contain ASCII letters, digits and . _ - / + = , @"),
]


def _check_ref(name: str, kind: str) -> str:
    for pattern, rule in _REF_RULES:
        if re.search(pattern, name):
            raise InvalidRefName(f"invalid {kind} {name!r}: {rule}")
    return name


def git_accepts_ref(name: str, *check_args: str) -> bool:
    """git's own verdict (tests check that the rules above are at least as strict)."""
    return _ok(tempfile.gettempdir(), "check-ref-format", *check_args, name) is not None


def validate_ref_name(name: str) -> str:
    """Refuse unsafe branch names before they reach git, a URL or a log line."""
    return _check_ref(name, "branch name")


def is_repository(path: StrPath) -> bool:
    """True if ``path`` itself is a repository (bare, or a worktree's top level); a plain
    directory inside some other repository does not count."""
    here = Path(path)
    if not here.is_dir() or (git_dir := _ok(here, "rev-parse", "--absolute-git-dir")) is None:
        return False
    if Path(git_dir).resolve() == here.resolve():
        return True  # a bare repository (or a .git directory)
    top = _ok(here, "rev-parse", "--show-toplevel")
    return top is not None and Path(top).resolve() == here.resolve()


def is_bare(path: StrPath) -> bool:
    return run(path, "rev-parse", "--is-bare-repository") == "true"


def init_repository(path: StrPath, initial_branch: str = "main", bare: bool = False) -> Path:
    validate_ref_name(initial_branch)
    target = Path(path).resolve()
    target.mkdir(parents=True, exist_ok=True)
    flags = ["--bare"] if bare else []
    run(target, "init", "-q", *flags, f"--initial-branch={initial_branch}", "--", str(target))
    return target


def rev_parse(repo: StrPath, rev: str) -> str | None:
    """The commit ``rev`` names, or None; ``rev`` is never taken as an option."""
    return _ok(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")


def _commit(repo: StrPath, rev: str) -> str:
    # A full object id (what git itself gave us) needs no round trip; a wrong one still fails
    # in the command that uses it.
    if _OID.fullmatch(rev):
        return rev
    if (sha := rev_parse(repo, rev)) is None:
        raise GitError(f"unknown revision {rev!r} in {repo}")
    return sha


def _ref_value(repo: StrPath, ref: str) -> str | None:
    return _ok(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", ref)


def resolve_branch(repo: StrPath, branch: str) -> str | None:
    """Commit of local branch ``branch`` (never a same-named tag), or None."""
    return rev_parse(repo, f"refs/heads/{validate_ref_name(branch)}")


def branch_exists(repo: StrPath, branch: str) -> bool:
    return resolve_branch(repo, branch) is not None


def create_branch(repo: StrPath, branch: str, start: str, *, force: bool = False) -> str:
    """Create ``branch`` at ``start``; a no-op if already there, so retries are safe. Raises
    RefMoved if it is elsewhere, unless ``force`` (refused by git if it is checked out)."""
    sha, ref = _commit(repo, start), f"refs/heads/{validate_ref_name(branch)}"
    current = _ref_value(repo, ref)
    if current is None:
        try:
            update_ref(repo, ref, sha, ZERO_OID, message=f"gastown: create {branch}")
        except RefMoved:
            current = _ref_value(repo, ref)
    if current in (None, sha):
        return sha
    if not force:
        raise RefMoved(f"branch {branch!r} already exists at {current[:12]}, not {sha[:12]}")
    run(repo, "branch", "--force", branch, sha)
    return sha


def delete_branch(repo: StrPath, branch: str, force: bool = False) -> bool:
    """Delete ``branch``; False if it did not exist. Without ``force`` git keeps unmerged
    branches."""
    if not branch_exists(repo, branch):
        return False
    run(repo, "branch", "-D" if force else "-d", branch)
    return True


def update_ref(repo: StrPath, ref: str, new: str, old: str, *, message: str = "gastown") -> None:
    """Move ``ref`` from ``old`` to ``new`` atomically (zero oid = absent; zero ``new``
    deletes). Raises RefMoved if it is not at ``old``: concurrent landers never clobber."""
    if not ref.startswith("refs/"):
        raise InvalidRefName(f"invalid ref {ref!r}: must start with 'refs/'")
    _check_ref(ref, "ref")
    if not (_OID.fullmatch(new) and _OID.fullmatch(old)):
        raise GitError(f"not full object ids: {new!r}, {old!r}")
    change = ["-d", ref, old] if set(new) == {"0"} else [ref, new, old]
    args = ["update-ref", "--no-deref", "-m", message, *change]
    status, out, err = _execute(repo, args)
    if status == 0:
        return
    current, expected = _ref_value(repo, ref), (None if set(old) == {"0"} else old)
    if current != expected:
        where = f"at {current[:12]}" if current else "absent"
        text = f"{ref} moved: it is {where}, expected {expected or 'absent'}"
        raise RefMoved(text, args, status, err, out)
    raise _failure(args, status, err, out)


def ahead_behind(
    repo: StrPath, ref: str, target: str, *, timeout: float = DEFAULT_TIMEOUT
) -> tuple[int, int]:
    """(commits on ``ref`` not on ``target``, commits on ``target`` not on ``ref``)."""
    a, b = _commit(repo, ref), _commit(repo, target)
    out = run(repo, "rev-list", "--left-right", "--count", f"{b}...{a}", timeout=timeout)
    behind, ahead = out.split()
    return int(ahead), int(behind)


def branch_tips(
    repo: StrPath, branches: Iterable[str], *, timeout: float = DEFAULT_TIMEOUT
) -> dict[str, str]:
    """The commit each local branch points at, by branch name, in one ``for-each-ref``;
    branches that do not exist (or do not point at a commit) are left out. Read-only."""
    names = sorted({validate_ref_name(b) for b in branches})
    if not names:
        return {}
    refs = {f"refs/heads/{name}": name for name in names}
    out = run(
        repo,
        "for-each-ref",
        "--format=%(objectname) %(objecttype) %(refname)",
        "--",
        *refs,
        timeout=timeout,
    )
    tips = {}
    for line in out.splitlines():
        sha, kind, ref = line.split(" ", 2)
        # a pattern also matches the refs below it (rig/a matches rig/a/b): exact names only
        if kind == "commit" and ref in refs:
            tips[refs[ref]] = sha
    return tips


def merge_base(repo: StrPath, a: str, b: str, *, timeout: float = DEFAULT_TIMEOUT) -> str | None:
    """The best common ancestor of two commits, or None (unrelated histories)."""
    status, out, _ = _execute(repo, ["merge-base", _commit(repo, a), _commit(repo, b)], timeout)
    return out if status == 0 else None


def is_ancestor(repo: StrPath, ancestor: str, descendant: str) -> bool:
    """Whether ``ancestor`` is reachable from ``descendant`` (already landed, for example)."""
    a, d = _commit(repo, ancestor), _commit(repo, descendant)
    status, out, err = _execute(repo, ["merge-base", "--is-ancestor", a, d])
    if status not in (0, 1):
        raise _failure(["merge-base", "--is-ancestor", a, d], status, err, out)
    return status == 0


def rev_list(repo: StrPath, base: str, head: str, *, no_merges: bool = False) -> list[str]:
    """Commits in ``base..head``, oldest first."""
    flags = ["--no-merges"] if no_merges else []
    b, h = _commit(repo, base), _commit(repo, head)
    out = run(repo, "rev-list", "--reverse", *flags, f"{b}..{h}")
    return out.split() if out else []


def rev_count(repo: StrPath, base: str, head: str) -> int:
    """How many commits ``base..head`` holds."""
    b, h = _commit(repo, base), _commit(repo, head)
    return int(run(repo, "rev-list", "--count", f"{b}..{h}"))


@dataclass(frozen=True)
class Commit:
    sha: str
    subject: str
    author: str
    email: str


def commits_between(repo: StrPath, base: str, head: str) -> list[Commit]:
    """Commits reachable from ``head`` but not from ``base``, oldest first."""
    span = f"{_commit(repo, base)}..{_commit(repo, head)}"
    fmt = "--format=%H%x1f%an%x1f%ae%x1f%s"
    out = run(repo, "log", "--no-color", "--no-show-signature", "-z", "--reverse", fmt, span)
    commits = []
    for record in filter(None, out.split("\0")):
        sha, author, email, subject = record.split("\x1f", 3)
        commits.append(Commit(sha, subject, author, email))
    return commits


def tree_of(repo: StrPath, commit: str) -> str:
    """The tree object id of a commit."""
    return run(
        repo, "rev-parse", "--verify", "--end-of-options", f"{_commit(repo, commit)}^{{tree}}"
    )


# --- reads for the invariant audit: a fixed number of git processes per repository -----------


def commits_missing(repo: StrPath, shas: Iterable[str]) -> set[str]:
    """Which of ``shas`` are not commits in ``repo`` (absent, or not a commit): one
    ``cat-file --batch-check`` however many are asked. Malformed ids count as missing."""
    wanted = sorted({s for s in shas if s})
    bad = {s for s in wanted if not _OID.fullmatch(s)}
    good = [s for s in wanted if s not in bad]
    if not good:
        return bad
    out = run(
        repo,
        "cat-file",
        "--batch-check=%(objectname) %(objecttype)",
        stdin="\n".join(good) + "\n",
    )
    present = set()
    for line in out.splitlines():
        sha, _, kind = line.partition(" ")
        if kind == "commit":
            present.add(sha)
    return bad | (set(good) - present)


def commits_unreachable(
    repo: StrPath, commits: Iterable[str], refs: Iterable[str], *, timeout: float = 120.0
) -> set[str]:
    """Which of ``commits`` (existing commit ids) no ref of ``refs`` (full names like
    ``refs/heads/main``, or commit ids) reaches: one ``rev-list --stdin``, whose output is empty
    when every one of them is reachable (the common case costs one walk of nothing)."""
    wanted = sorted(set(commits))
    if not wanted:
        return set()
    for name in refs:
        if not _OID.fullmatch(name):
            _check_ref(name, "ref")
    negative = [f"^{name}" for name in sorted(set(refs))]
    out = run(
        repo, "rev-list", "--stdin", stdin="\n".join([*wanted, *negative]) + "\n", timeout=timeout
    )
    return set(out.split()) & set(wanted)


def first_parent_line(
    repo: StrPath, tip: str, stops: Iterable[str], *, timeout: float = 120.0
) -> list[str]:
    """The target's first-parent line from ``tip`` (newest first) down to, not including, the
    commits of ``stops`` and what they reach: the sequence of tips a target branch moved through
    (each landing adds one step, or a few for the rebase strategy)."""
    args = [_commit(repo, tip), *(f"^{_commit(repo, s)}" for s in sorted(set(stops)))]
    out = run(
        repo, "rev-list", "--first-parent", "--stdin", stdin="\n".join(args) + "\n", timeout=timeout
    )
    return out.split()


def refs_under(repo: StrPath, *prefixes: str) -> dict[str, str]:
    """Refs under ``prefixes`` (``refs/heads/``, ``refs/gastown/archive/``) -> commit id: one
    ``for-each-ref``."""
    for prefix in prefixes:
        _check_ref(prefix.rstrip("/"), "ref prefix")
    out = run(repo, "for-each-ref", "--format=%(objectname) %(refname)", "--", *prefixes)
    refs = {}
    for line in out.splitlines():
        sha, _, name = line.partition(" ")
        refs[name] = sha
    return refs
