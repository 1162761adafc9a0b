"""Bundles: a whole repository (every ref: branches, rig branches, ``refs/gastown/archive/``,
tags) in one file, for backups, and a repository made again from one.

A bundle is made with ``--all`` while agents and the merge queue keep working: git reads the
refs once and packs what they reach, so the file is consistent on its own (refs only move
forward to commits that exist; nothing here takes the repository's lock or writes to it).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from rigs.git.refs import _check_ref
from rigs.git.run import _OID, GitError, StrPath, _execute, _failure, _ok, run

BUNDLE_TIMEOUT = 3600.0  # a large repository takes a while to pack


@dataclass(frozen=True)
class BundleInfo:
    refs: dict[str, str]  # every ref under refs/ the bundle holds: name -> object id
    head: str | None  # where HEAD points (refs/heads/main), None when detached or unborn
    bare: bool
    object_format: str  # sha1 or sha256


def git_version() -> str:
    """The installed git's version (`2.39.5`), for a backup's manifest."""
    return run(tempfile.gettempdir(), "--version").removeprefix("git version ")


def repository_describe(repo: StrPath) -> tuple[str | None, bool, str]:
    """(HEAD's ref or None, bare, object format) of a repository, to make it again alike."""
    head = _ok(repo, "symbolic-ref", "--quiet", "HEAD")
    bare = run(repo, "rev-parse", "--is-bare-repository") == "true"
    object_format = _ok(repo, "rev-parse", "--show-object-format") or "sha1"
    return (head or None), bare, object_format


def bundle_list_heads(bundle: StrPath, cwd: StrPath | None = None) -> dict[str, str]:
    """The refs under ``refs/`` a bundle holds (its HEAD and worktrees' HEADs left out)."""
    where = cwd if cwd is not None else Path(bundle).parent
    out = run(where, "bundle", "list-heads", "--", str(Path(bundle).resolve()))
    refs = {}
    for line in out.splitlines():
        sha, _, name = line.partition(" ")
        if name.startswith("refs/"):
            refs[name] = sha
    return refs


def bundle_create(repo: StrPath, bundle: StrPath, *, timeout: float = BUNDLE_TIMEOUT) -> BundleInfo:
    """Write every ref of ``repo`` and what it reaches to ``bundle`` (a new file); return
    what it holds, read back from the file. A repository without a single commit has nothing
    to bundle (git refuses an empty bundle): then no file is written and ``refs`` is empty."""
    head, bare, object_format = repository_describe(repo)
    target = Path(bundle).resolve()
    if not run(repo, "for-each-ref", "--count=1", "--format=%(refname)", "refs/"):
        return BundleInfo({}, head, bare, object_format)
    run(repo, "bundle", "create", "--quiet", "--", str(target), "--all", timeout=timeout)
    return BundleInfo(bundle_list_heads(target, repo), head, bare, object_format)


def bundle_verify(repo: StrPath, bundle: StrPath, *, timeout: float = BUNDLE_TIMEOUT) -> None:
    """Check that ``bundle`` is a readable bundle whose history ``repo`` can take (git needs
    a repository to check one against). Raises GitError with git's reason."""
    run(repo, "bundle", "verify", "--quiet", "--", str(Path(bundle).resolve()), timeout=timeout)


def repository_from_bundle(
    path: StrPath,
    bundle: StrPath | None,
    *,
    head: str | None,
    bare: bool,
    object_format: str = "sha1",
    timeout: float = BUNDLE_TIMEOUT,
) -> dict[str, str]:
    """Make a new repository at ``path`` (bare or not, as the original was) holding every ref
    of ``bundle`` under the same name, with HEAD where it was; a checkout's files are those of
    HEAD. ``bundle`` None: the original had no commit, an empty repository is made. Returns the
    refs now in the repository (name -> object id). Refuses a ``path`` that is not empty."""
    if head is not None and not head.startswith("refs/heads/"):
        raise GitError(f"HEAD must name a branch (refs/heads/...), not {head!r}")
    if head is not None:
        _check_ref(head, "ref")
    if object_format not in ("sha1", "sha256"):
        raise GitError(f"unknown object format {object_format!r}")
    target = Path(path).resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise GitError(f"refusing to restore a repository into {target}: it is not empty")
    target.mkdir(parents=True, exist_ok=True)
    flags = ["--bare"] if bare else []
    run(target, "init", "--quiet", *flags, f"--object-format={object_format}", "--", str(target))
    if head is not None:
        run(target, "symbolic-ref", "HEAD", head)
    if bundle is None:
        return {}
    source = str(Path(bundle).resolve())
    bundle_verify(target, source, timeout=timeout)
    # --update-head-ok: a checkout's HEAD branch is one of the refs fetched (it is unborn yet)
    fetch = ["fetch", "--quiet", "--no-tags", "--update-head-ok", source, "+refs/*:refs/*"]
    status, out, err = _execute(target, fetch, timeout)
    if status != 0:
        raise _failure(fetch, status, err, out)
    born = head is not None and _ok(target, "rev-parse", "--verify", "--quiet", head)
    if not bare and born:
        run(target, "reset", "--quiet", "--hard", timeout=timeout)  # the files of HEAD
    return refs_all(target)


def refs_all(repo: StrPath) -> dict[str, str]:
    """Every ref under ``refs/`` (name -> object id), in one ``for-each-ref``."""
    out = run(repo, "for-each-ref", "--format=%(objectname) %(refname)", "refs/")
    refs = {}
    for line in out.splitlines():
        sha, _, name = line.partition(" ")
        refs[name] = sha
    return refs


def object_exists(repo: StrPath, sha: str) -> bool:
    """Whether the object ``sha`` (a full id) is in ``repo``."""
    if not _OID.fullmatch(sha):
        return False
    return _ok(repo, "cat-file", "-e", f"{sha}^{{object}}") is not None
