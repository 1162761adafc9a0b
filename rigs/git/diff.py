"""Diffs between two commits: per-file line counts, changed paths, the function and class
names the hunks touch, and short excerpts for prompts and UIs."""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass

from rigs.git.refs import _commit
from rigs.git.run import StrPath, common_dir, run
from rigs.git.symbols import DIFF_ATTRIBUTES, patch_symbols

logger = logging.getLogger("rigs.git")


@dataclass(frozen=True)
class FileChange:
    path: str
    added: int | None  # None for binary files
    deleted: int | None
    status: str  # A, M, D, R, C or T
    old_path: str | None = None  # for renames and copies


def diff_numstat(repo: StrPath, base: str, head: str) -> list[FileChange]:
    """Per-file line counts; ``-z`` keeps renamed and oddly named paths unambiguous."""
    b, h = _commit(repo, base), _commit(repo, head)
    tokens = run(repo, "diff-tree", "-r", "-M", "--raw", "--numstat", "-z", b, h).split("\0")
    raw: list[tuple[str, str | None, str]] = []
    counts: list[tuple[int | None, int | None]] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.startswith(":"):  # raw record: ":modes oids status", then path(s)
            status = token.split()[-1][0]
            two = status in "RC"
            raw.append((status, tokens[i + 1] if two else None, tokens[i + 1 + two]))
            i += 2 + two
        elif token:  # numstat record: "added\tdeleted\tpath", or "...\t" + old + new
            added, deleted, path = token.split("\t", 2)
            counts.append((_count(added), _count(deleted)))
            i += 1 if path else 3
        else:
            i += 1
    return [
        FileChange(path, added, deleted, status, old)
        for (status, old, path), (added, deleted) in zip(raw, counts, strict=True)
    ]


def _count(text: str) -> int | None:
    return None if text == "-" else int(text)  # "-" marks a binary file


def changed_paths(repo: StrPath, base: str, head: str) -> list[str]:
    """Every path touched; a rename lists both its old and new path."""
    b, h = _commit(repo, base), _commit(repo, head)
    out = run(repo, "diff-tree", "-r", "--no-renames", "--name-only", "-z", b, h)
    return [p for p in out.split("\0") if p]


def _diff(repo: StrPath, base: str, head: str, context: int, paths: list[str] | None) -> str:
    b, h = _commit(repo, base), _commit(repo, head)
    config = ["-c", "core.quotePath=false"]
    attributes = common_dir(repo) / "gastown-diff-attributes"
    try:
        if not attributes.is_file() or attributes.read_text() != DIFF_ATTRIBUTES:
            scratch = attributes.with_name(f"{attributes.name}.{uuid.uuid4().hex}")
            scratch.write_text(DIFF_ATTRIBUTES)
            os.replace(scratch, attributes)
        config += ["-c", f"core.attributesFile={attributes}"]
    except OSError:
        logger.warning("cannot write %s; hunk headers use git's defaults", attributes)
    flags = ["--no-color", "--no-ext-diff", "--no-textconv", "--no-relative", "-M", f"-U{context}"]
    flags += ["--src-prefix=a/", "--dst-prefix=b/", b, h, "--", *(paths or [])]
    return run(repo, *config, "--literal-pathspecs", "diff", *flags)


def diff_symbols(
    repo: StrPath, base: str, head: str, paths: list[str] | None = None
) -> dict[str, list[str]]:
    """Function/class names each file's hunks touch (see :func:`symbols.patch_symbols`)."""
    return patch_symbols(_diff(repo, base, head, 0, paths))


def diff_excerpt(
    repo: StrPath, base: str, head: str, paths: list[str] | None = None, max_lines: int = 40
) -> str:
    """The start of the patch, cut to ``max_lines`` lines for prompts and UIs."""
    lines = _diff(repo, base, head, 3, paths).splitlines()
    if len(lines) > max_lines:
        lines = [*lines[:max_lines], f"... ({len(lines) - max_lines} more lines)"]
    return "\n".join(lines)
