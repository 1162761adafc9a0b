"""Diffs between two commits: per-file line counts, changed paths, the function and class
names the hunks touch, short excerpts for prompts and UIs, and the hunks themselves (where in
the base a side changes a file, for the overlap forecast)."""

from __future__ import annotations

import logging
import os
import re
import uuid
from dataclasses import dataclass

from rigs.git.refs import _commit
from rigs.git.run import DEFAULT_TIMEOUT, StrPath, common_dir, run
from rigs.git.symbols import DIFF_ATTRIBUTES, patch_symbols

logger = logging.getLogger("rigs.git")


@dataclass(frozen=True)
class FileChange:
    path: str
    added: int | None  # None for binary files
    deleted: int | None
    status: str  # A, M, D, R, C or T
    old_path: str | None = None  # for renames and copies


def diff_numstat(
    repo: StrPath, base: str, head: str, *, timeout: float = DEFAULT_TIMEOUT
) -> list[FileChange]:
    """Per-file line counts; ``-z`` keeps renamed and oddly named paths unambiguous."""
    b, h = _commit(repo, base), _commit(repo, head)
    args = ["diff-tree", "-r", "-M", "--raw", "--numstat", "-z", b, h]
    tokens = run(repo, *args, timeout=timeout).split("\0")
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


@dataclass(frozen=True)
class Hunk:
    """One ``-U0`` hunk: ``old_start``/``old_count`` in the base's lines (1-based; a pure
    insertion has ``old_count`` 0 and ``old_start`` the line it follows), ``text`` the header and
    its ``-``/``+`` lines."""

    old_start: int
    old_count: int
    new_start: int
    new_count: int
    text: str

    @property
    def span(self) -> tuple[int, int]:
        """The base lines it replaces as a half-open, 0-based interval; ``(n, n)`` for an
        insertion between lines ``n`` and ``n + 1``."""
        start = self.old_start if self.old_count == 0 else self.old_start - 1
        return start, start + self.old_count


@dataclass(frozen=True)
class FileHunks:
    path: str
    hunks: tuple[Hunk, ...]
    created: bool = False  # the file is new on this side
    deleted: bool = False
    binary: bool = False  # changed, but git shows no lines


_HUNK_HEADER = re.compile(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_C_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}


def _unquote(text: str) -> str:
    """A path as git prints it with ``core.quotePath=false``: as is, or C-quoted when it holds
    a control character, a quote or a backslash (octal escapes are UTF-8 bytes)."""
    if not (text.startswith('"') and text.endswith('"')):
        return text
    out, i, body = bytearray(), 0, text[1:-1]
    while i < len(body):
        char = body[i]
        if char == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt in "01234567":
                out.append(int(body[i + 1 : i + 4], 8))
                i += 4
                continue
            out.append(_C_ESCAPES.get(nxt, ord(nxt)))
            i += 2
            continue
        out += char.encode()
        i += 1
    return out.decode(errors="replace")


def _header_path(line: str) -> str:
    """The path of a ``diff --git a/P b/P`` line (no renames: both sides name the same path,
    so the split is the middle, whatever spaces the path holds)."""
    rest = line[len("diff --git ") :]
    half = (len(rest) - 1) // 2
    return _unquote(rest[:half])[2:]  # drop "a/"


def diff_hunks(repo: StrPath, base: str, head: str, paths: list[str]) -> dict[str, FileHunks]:
    """The ``-U0`` hunks of ``base..head`` for ``paths`` (taken literally, after ``--``), one
    command for all of them; a path ``head`` does not change is absent. No rename detection, so
    line numbers stay in the base's file of the same name."""
    if not paths:
        return {}
    b, h = _commit(repo, base), _commit(repo, head)
    flags = ["--no-color", "--no-ext-diff", "--no-textconv", "--no-relative", "--no-renames"]
    flags += ["-U0", "--src-prefix=a/", "--dst-prefix=b/", b, h, "--", *paths]
    out = run(repo, "-c", "core.quotePath=false", "--literal-pathspecs", "diff", *flags)
    files: dict[str, FileHunks] = {}
    path, hunks, flags_of, lines = None, [], set(), []

    def close_hunk() -> None:
        if lines:
            match = _HUNK_HEADER.match(lines[0])
            if match:
                old, old_count, new, new_count = match.groups()
                hunks.append(
                    Hunk(
                        int(old),
                        1 if old_count is None else int(old_count),
                        int(new),
                        1 if new_count is None else int(new_count),
                        "\n".join(lines),
                    )
                )
            lines.clear()

    def close_file() -> None:
        close_hunk()
        if path is not None:
            files[path] = FileHunks(
                path,
                tuple(hunks),
                created="created" in flags_of,
                deleted="deleted" in flags_of,
                binary="binary" in flags_of,
            )

    for line in out.splitlines():
        if line.startswith("diff --git "):
            close_file()
            path, hunks, flags_of = _header_path(line), [], set()
        elif line.startswith("@@ "):
            close_hunk()
            lines.append(line)
        elif lines:
            lines.append(line)  # "-", "+" or "\ No newline at end of file"
        elif line.startswith("new file mode"):
            flags_of.add("created")
        elif line.startswith("deleted file mode"):
            flags_of.add("deleted")
        elif line.startswith("Binary files "):
            flags_of.add("binary")
    close_file()
    return files


# --- one file's patch, for people to read (the board's diff view) -------------------------------

FULL_CONTEXT = 1_000_000  # "-U" large enough that every unchanged line of a file comes along
PATCH_MAX_BYTES = 4_000_000  # past this, a file's patch is summarised, not returned


@dataclass(frozen=True)
class PatchLine:
    """One line of a file's patch: ``kind`` is ``" "`` (unchanged), ``"-"`` (only in the base),
    ``"+"`` (only in the head) or ``"@"`` (a hunk header: lines between hunks are not in the
    patch); ``old``/``new`` its 1-based line numbers on each side (None where it is absent)."""

    kind: str
    old: int | None
    new: int | None
    text: str


@dataclass(frozen=True)
class FilePatch:
    path: str
    old_path: str | None = None  # the base's name of a renamed or copied file
    lines: tuple[PatchLine, ...] = ()
    binary: bool = False  # changed, but git shows no lines
    too_large: bool = False  # the patch passed ``max_bytes``: no lines
    size: int = 0  # bytes of patch git wrote
    old_newline: bool = True  # whether each side's last line ends with a newline
    new_newline: bool = True


def _readable(text: str) -> str:
    """git's output as text people can read: bytes that are not UTF-8 (GitPython keeps them as
    surrogates) become U+FFFD, so a page can always encode them."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return text


def diff_file(
    repo: StrPath,
    base: str,
    head: str,
    path: str,
    old_path: str | None = None,
    *,
    context: int = FULL_CONTEXT,
    max_bytes: int = PATCH_MAX_BYTES,
    timeout: float = DEFAULT_TIMEOUT,
) -> FilePatch:
    """The patch of one file between two commits, parsed into lines with their numbers. With
    the default ``context`` every unchanged line comes along (one hunk: the whole file, so a
    reader can unfold any of it). ``old_path`` names the base's side of a rename (both paths go
    to git, after ``--``, so it detects the rename). One ``git diff``."""
    b, h = _commit(repo, base), _commit(repo, head)
    flags = ["--no-color", "--no-ext-diff", "--no-textconv", "--no-relative", "-M"]
    flags += [f"-U{int(context)}", "--src-prefix=a/", "--dst-prefix=b/", b, h, "--", path]
    if old_path and old_path != path:
        flags.append(old_path)
    out = run(
        repo, "-c", "core.quotePath=false", "--literal-pathspecs", "diff", *flags, timeout=timeout
    )
    size = len(out)
    if size > max_bytes:
        return FilePatch(path, old_path, too_large=True, size=size)
    lines: list[PatchLine] = []
    binary, in_hunk, old_no, new_no = False, False, 0, 0
    newline = {"-": True, "+": True}
    last_kind = " "
    for line in _readable(out).split("\n"):
        if not in_hunk:
            if line.startswith("Binary files ") or line == "GIT binary patch":
                binary = True
            if not line.startswith("@@ "):
                continue
            in_hunk = True
        if line.startswith("@@ "):
            match = _HUNK_HEADER.match(line)
            if match is None:
                continue
            old_no, new_no = int(match.group(1)), int(match.group(3))
            if lines or old_no > 1 or new_no > 1:  # lines before the first hunk are not shown
                lines.append(PatchLine("@", old_no, new_no, line))
            continue
        if line.startswith("diff --git "):  # a second file (a copy source): stop at it
            break
        kind, text = line[:1], line[1:]
        if kind == " ":
            lines.append(PatchLine(" ", old_no, new_no, text))
            old_no, new_no = old_no + 1, new_no + 1
        elif kind == "-":
            lines.append(PatchLine("-", old_no, None, text))
            old_no += 1
        elif kind == "+":
            lines.append(PatchLine("+", None, new_no, text))
            new_no += 1
        elif kind == "\\":  # "\ No newline at end of file", about the line before it
            if last_kind == " ":
                newline["-"] = newline["+"] = False
            else:
                newline[last_kind] = False
        last_kind = kind if kind in " -+" else last_kind
    return FilePatch(
        path,
        old_path,
        tuple(lines),
        binary=binary,
        size=size,
        old_newline=newline["-"],
        new_newline=newline["+"],
    )
