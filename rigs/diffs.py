"""What a change looks like to a person reviewing it: the board's diff view, read through
`rigs.git` only.

Three changes can be shown: a rig's branch against its merge base with the target branch, a
merge request's candidate (the commit that was or will be gated, against its merge base, or
for a landed one the exact change it made on the target), and a landed leg (its rig's landed
merge request). Each is a pair of commits (`DiffTarget`).

Reading git here is the same sanctioned exception to DESIGN rule 4 as `rigs.selectors.
rig_positions` (issue 16), stretched to the diff view by issue 21: read-only commands, each
bounded by `DIFF_READ_TIMEOUT`, and their results cached by commit ids (two commits' diff
never changes), so a page asks git once per change and per file. The tree is one
`git diff-tree --numstat`; a file is one `git diff` with its whole context (so any unchanged
run can unfold), highlighted server-side with Pygments, on demand. No lock is taken and
nothing is written.
"""

from __future__ import annotations

import functools
import hashlib
import html
from collections import defaultdict
from dataclasses import dataclass, field

from django.core.cache import cache
from pygments.lexers import TextLexer, get_lexer_for_filename
from pygments.token import STANDARD_TYPES
from pygments.util import ClassNotFound

from common.errors import Refusal
from rigs import git
from rigs.models import MergeRequest, Repository, Rig

DIFF_READ_TIMEOUT = 10.0  # seconds any one git read of the diff view may take
CACHE_SECONDS = 24 * 3600  # the diff of two commits never changes
CONTEXT = 3  # unchanged lines shown around each change; longer runs fold
FOLD_MIN = 4  # a run that would hide fewer lines than this is shown whole
LARGE_FILE_LINES = 2_000  # changed lines past which a file is summarised until asked for
HIGHLIGHT_MAX_LINES = 10_000  # longer files are shown without highlighting
TREE_MAX_FILES = 5_000  # files listed in one tree (beyond: "and N more")


class DiffUnavailable(Refusal):
    """The change cannot be read from this server: its branch is gone, or the repository is
    not on this host (or git took too long)."""

    code = "diff_unavailable"
    status = 409


@dataclass(frozen=True)
class DiffTarget:
    """A change to show: ``base..head`` in ``repository``. ``kind`` is ``rig``, ``merge_request``
    or ``landed``; ``label`` says what the pair is, in words."""

    repository: Repository
    base: str
    head: str
    kind: str
    label: str
    rig: Rig | None = None
    merge_request: MergeRequest | None = None

    @property
    def key(self) -> str:
        return f"{self.base}..{self.head}"


def _cached(key: str, read):
    value = cache.get(key)
    if value is None:
        value = read()
        cache.set(key, value, CACHE_SECONDS)
    return value


def _merge_base(repository: Repository, a: str, b: str) -> str | None:
    key = f"gastown:merge-base:{a}:{b}"
    found = cache.get(key)
    if found is None:
        found = git.merge_base(repository.path, a, b, timeout=DIFF_READ_TIMEOUT) or ""
        cache.set(key, found, CACHE_SECONDS)
    return found or None


def _unavailable(what: str, exc: Exception | None = None) -> DiffUnavailable:
    why = f": {exc}" if exc else ""
    return DiffUnavailable(f"the diff of {what} cannot be read on this server{why}")


def rig_diff_target(rig: Rig) -> DiffTarget:
    """A rig's branch against its merge base with the target branch (what it would land)."""
    repository = rig.repository
    if not rig.branch or rig.state not in Rig.LIVE_STATES:
        raise _unavailable(f"rig {rig.slug}", Exception(f"its branch is not on disk ({rig.state})"))
    try:
        tips = git.branch_tips(
            repository.path, [rig.branch, repository.target_branch], timeout=DIFF_READ_TIMEOUT
        )
        head, target = tips.get(rig.branch), tips.get(repository.target_branch)
        if head is None or target is None:
            raise _unavailable(f"rig {rig.slug}", Exception("its branch or the target is gone"))
        base = _merge_base(repository, head, target)
    except git.GitError as exc:
        raise _unavailable(f"rig {rig.slug}", exc) from exc
    if base is None:
        raise _unavailable(f"rig {rig.slug}", Exception("no common history with the target"))
    label = f"{rig.branch} against its merge base with {repository.target_branch}"
    return DiffTarget(repository, base, head, "rig", label, rig=rig)


def merge_request_diff_target(mr: MergeRequest) -> DiffTarget:
    """The change a merge request lands: once landed, exactly what it did to the target
    (`target_commit..merge_commit`); before, its source commit against its merge base with
    the target (the candidate the gate runs is that change merged onto the target's tip)."""
    repository = mr.repository
    what = f"merge request #{mr.id}"
    if mr.state == MergeRequest.State.MERGED and mr.merge_commit and mr.target_commit:
        label = f"landed on {mr.target_branch} in {mr.merge_commit[:10]}"
        return DiffTarget(
            repository,
            mr.target_commit,
            mr.merge_commit,
            "landed",
            label,
            rig=mr.rig,
            merge_request=mr,
        )
    if not mr.source_commit:
        raise _unavailable(what, Exception("it has no source commit"))
    try:
        target = mr.target_commit or git.branch_tips(
            repository.path, [mr.target_branch], timeout=DIFF_READ_TIMEOUT
        ).get(mr.target_branch)
        if target is None:
            raise _unavailable(what, Exception(f"branch {mr.target_branch} is gone"))
        base = _merge_base(repository, mr.source_commit, target)
    except git.GitError as exc:
        raise _unavailable(what, exc) from exc
    if base is None:
        raise _unavailable(what, Exception("no common history with the target"))
    label = f"{mr.source_branch} at {mr.source_commit[:10]} against its merge base"
    return DiffTarget(
        repository, base, mr.source_commit, "merge_request", label, rig=mr.rig, merge_request=mr
    )


# --- the tree ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TreeFile:
    path: str
    old_path: str | None
    status: str  # A, M, D, R, C or T
    added: int | None  # None: binary
    deleted: int | None

    @property
    def binary(self) -> bool:
        return self.added is None

    @property
    def changed(self) -> int:
        return (self.added or 0) + (self.deleted or 0)

    @property
    def large(self) -> bool:
        return self.changed > LARGE_FILE_LINES

    @property
    def anchor(self) -> str:
        return "f-" + hashlib.sha256(self.path.encode()).hexdigest()[:12]

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass
class TreeDir:
    path: str
    files: list[TreeFile] = field(default_factory=list)

    @property
    def added(self) -> int:
        return sum(f.added or 0 for f in self.files)

    @property
    def deleted(self) -> int:
        return sum(f.deleted or 0 for f in self.files)


@dataclass(frozen=True)
class DiffTree:
    files: tuple[TreeFile, ...]

    @property
    def added(self) -> int:
        return sum(f.added or 0 for f in self.files)

    @property
    def deleted(self) -> int:
        return sum(f.deleted or 0 for f in self.files)

    def dirs(self) -> list[TreeDir]:
        """The files by folder (sorted; the top level is "")."""
        by_dir: dict[str, TreeDir] = {}
        for f in self.files:
            folder = f.path.rsplit("/", 1)[0] if "/" in f.path else ""
            by_dir.setdefault(folder, TreeDir(folder)).files.append(f)
        return [by_dir[k] for k in sorted(by_dir)]

    def find(self, path: str) -> TreeFile | None:
        for f in self.files:
            if f.path == path:
                return f
        return None


def diff_tree(target: DiffTarget) -> DiffTree:
    """Every file the change touches with its +/- counts (renames detected), sorted by path:
    one `git diff-tree --numstat`, cached by the pair of commits."""

    def read() -> DiffTree:
        try:
            changes = git.diff_numstat(
                target.repository.path, target.base, target.head, timeout=DIFF_READ_TIMEOUT
            )
        except git.GitError as exc:
            raise _unavailable(target.label, exc) from exc
        files = sorted(
            (TreeFile(c.path, c.old_path, c.status, c.added, c.deleted) for c in changes),
            key=lambda f: f.path,
        )
        return DiffTree(tuple(files))

    return _cached(f"gastown:diff-tree:{target.key}", read)


# --- one file ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One line as shown: ``kind`` " " (unchanged), "-", "+" or "@" (lines not read between two
    hunks); its line numbers; its text as highlighted HTML (escaped)."""

    kind: str
    old: int | None
    new: int | None
    html: str


@dataclass(frozen=True)
class Segment:
    """A run of rows; a folded one starts hidden behind "show N unchanged lines"."""

    rows: tuple[Row, ...]
    folded: bool = False


@dataclass(frozen=True)
class SplitRow:
    left: Row | None
    right: Row | None


@dataclass(frozen=True)
class FileView:
    path: str
    old_path: str | None
    segments: tuple[Segment, ...] = ()
    binary: bool = False
    too_large: bool = False  # the patch is too big to show at all
    highlighted: bool = True
    size: int = 0
    old_newline: bool = True
    new_newline: bool = True

    @property
    def rows(self) -> list[Row]:
        return [row for segment in self.segments for row in segment.rows]


@functools.lru_cache(maxsize=512)
def _lexer(name: str):
    try:
        return get_lexer_for_filename(name, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return TextLexer(stripnl=False, ensurenl=False)


@functools.lru_cache(maxsize=1024)
def _css_class(token_type) -> str:
    while token_type not in STANDARD_TYPES:
        token_type = token_type.parent
    return STANDARD_TYPES[token_type]


def highlight_lines(path: str, lines: list[str]) -> list[str]:
    """Each line as HTML, highlighted by the lexer Pygments picks for the file's name (plain
    text when none). The whole text is lexed at once (a docstring spans lines) and the spans
    are cut at each newline, so a line's HTML is always balanced."""
    if not lines:
        return []
    out: list[list[str]] = [[]]
    for token_type, value in _lexer(path.rsplit("/", 1)[-1]).get_tokens("\n".join(lines)):
        css = _css_class(token_type)
        for i, part in enumerate(value.split("\n")):
            if i:
                out.append([])
            if part:
                text = html.escape(part, quote=False)
                out[-1].append(f'<span class="{css}">{text}</span>' if css else text)
    result = ["".join(parts) for parts in out[: len(lines)]]
    return result + [""] * (len(lines) - len(result))


def _highlighted(path: str, patch: git.FilePatch) -> tuple[list[Row], bool]:
    """The patch's lines as rows, each side's text highlighted as one file."""
    old = [(i, line) for i, line in enumerate(patch.lines) if line.kind in " -"]
    new = [(i, line) for i, line in enumerate(patch.lines) if line.kind in " +"]
    html_of: dict[tuple[int, str], str] = {}
    highlight = max(len(old), len(new)) <= HIGHLIGHT_MAX_LINES
    for side, members, name in (("-", old, patch.old_path or path), ("+", new, path)):
        texts = [line.text for _, line in members]
        marked = highlight_lines(name, texts) if highlight else [html.escape(t) for t in texts]
        for (i, _), text in zip(members, marked, strict=True):
            html_of[(i, side)] = text
    rows = []
    for i, line in enumerate(patch.lines):
        if line.kind == "@":
            rows.append(Row("@", line.old, line.new, html.escape(line.text)))
        else:
            side = "-" if line.kind == "-" else "+"
            rows.append(Row(line.kind, line.old, line.new, html_of[(i, side)]))
    return rows, highlight


def fold(rows: list[Row], context: int = CONTEXT) -> list[Segment]:
    """Runs of unchanged rows longer than the context around the changes fold: the first
    `context` after a change and the last `context` before the next stay shown."""
    segments: list[Segment] = []
    shown: list[Row] = []
    i = 0
    while i < len(rows):
        if rows[i].kind != " ":
            shown.append(rows[i])
            i += 1
            continue
        j = i
        while j < len(rows) and rows[j].kind == " ":
            j += 1
        run = rows[i:j]
        keep_head = 0 if i == 0 or rows[i - 1].kind == "@" else context
        keep_tail = 0 if j == len(rows) or rows[j].kind == "@" else context
        if len(run) - keep_head - keep_tail >= FOLD_MIN:
            shown.extend(run[:keep_head])
            if shown:
                segments.append(Segment(tuple(shown)))
            segments.append(Segment(tuple(run[keep_head : len(run) - keep_tail]), folded=True))
            shown = list(run[len(run) - keep_tail :])
        else:
            shown.extend(run)
        i = j
    if shown:
        segments.append(Segment(tuple(shown)))
    return segments


def split_rows(rows: tuple[Row, ...] | list[Row]) -> list[SplitRow]:
    """Side by side: an unchanged line on both sides; a run of deletions beside the run of
    additions that follows it, line by line."""
    out: list[SplitRow] = []
    i = 0
    while i < len(rows):
        row = rows[i]
        if row.kind in " @":
            out.append(SplitRow(row, row))
            i += 1
            continue
        dels, adds = [], []
        while i < len(rows) and rows[i].kind == "-":
            dels.append(rows[i])
            i += 1
        while i < len(rows) and rows[i].kind == "+":
            adds.append(rows[i])
            i += 1
        for k in range(max(len(dels), len(adds))):
            out.append(
                SplitRow(dels[k] if k < len(dels) else None, adds[k] if k < len(adds) else None)
            )
    return out


def diff_file_view(target: DiffTarget, path: str, old_path: str | None = None) -> FileView:
    """One file of the change, read when asked: one `git diff` with the whole file as context,
    both sides highlighted, unchanged runs folded. Cached by the pair of commits and the path."""

    def read() -> FileView:
        try:
            patch = git.diff_file(
                target.repository.path,
                target.base,
                target.head,
                path,
                old_path,
                timeout=DIFF_READ_TIMEOUT,
            )
        except git.GitError as exc:
            raise _unavailable(f"{path} in {target.label}", exc) from exc
        if patch.binary or patch.too_large:
            return FileView(
                path, old_path, binary=patch.binary, too_large=patch.too_large, size=patch.size
            )
        rows, highlighted = _highlighted(path, patch)
        return FileView(
            path,
            old_path,
            tuple(fold(rows)),
            highlighted=highlighted,
            size=patch.size,
            old_newline=patch.old_newline,
            new_newline=patch.new_newline,
        )

    digest = hashlib.sha256(f"{path}\0{old_path or ''}".encode()).hexdigest()
    return _cached(f"gastown:diff-file:{target.key}:{digest}", read)


# --- where a line commented on earlier is now ---------------------------------------------------


@dataclass(frozen=True)
class LineAnchor:
    """A line a comment was made on: ``line`` of ``path`` in ``commit`` (the head side)."""

    key: int
    commit: str
    path: str
    line: int


def lines_now(
    repository: Repository, head: str, anchors: list[LineAnchor]
) -> dict[int, int | None]:
    """Where each anchored line is in ``head``: its line number there, or None when a later
    commit changed or removed it (the comment is outdated). One ``git diff -U0`` per distinct
    commit the anchors were made on, cached."""
    found: dict[int, int | None] = {}
    by_commit: dict[str, list[LineAnchor]] = defaultdict(list)
    for anchor in anchors:
        if anchor.commit == head:
            found[anchor.key] = anchor.line
        else:
            by_commit[anchor.commit].append(anchor)
    for commit, members in by_commit.items():
        paths = sorted({a.path for a in members})
        digest = hashlib.sha256("\0".join(paths).encode()).hexdigest()

        def read(commit=commit, paths=paths):
            try:
                return git.diff_hunks(repository.path, commit, head, paths)
            except git.GitError:
                return {}

        hunks = _cached(f"gastown:diff-hunks:{commit}:{head}:{digest}", read)
        for anchor in members:
            found[anchor.key] = _moved(anchor.line, hunks.get(anchor.path))
    return found


def _moved(line: int, file: git.FileHunks | None) -> int | None:
    """``line`` after the file's hunks: shifted by the lines added or removed above it, None
    when a hunk replaced it (or the file is gone)."""
    if file is None:
        return line
    if file.deleted:
        return None
    shift = 0
    for hunk in file.hunks:
        if hunk.old_count and hunk.old_start <= line < hunk.old_start + hunk.old_count:
            return None
        ends_before = (
            hunk.old_start < line
            if hunk.old_count == 0
            else (hunk.old_start + hunk.old_count - 1 < line)
        )
        if ends_before:
            shift += hunk.new_count - hunk.old_count
    return line + shift
