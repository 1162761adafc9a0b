"""Reads for the diff view (a rig's change, a merge request's, a landed leg's): the page (the
file tree, the whole-change comments) and one file on demand (its rows, with the comment
threads on their lines). Git is read through `rigs.diffs` (bounded, cached by commits); the
database in a fixed number of queries whatever the number of files or comments."""

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.shortcuts import get_object_or_404

from convoys.models import Leg, ReviewComment
from events.selectors import last_event_id
from rigs import diffs
from rigs.models import MergeRequest, Rig

VIEWS = ("unified", "split")


@dataclass
class Thread:
    """A review comment with its answers; ``line_now`` where its line is in the diff shown
    (None: outdated, or not a line comment)."""

    comment: ReviewComment
    replies: list[ReviewComment] = field(default_factory=list)
    line_now: int | None = None
    outdated: bool = False

    @property
    def id(self) -> int:
        return self.comment.id


def _threads(rig: Rig, merge_request: MergeRequest | None = None) -> list[Thread]:
    """The rig's review threads, oldest first: two queries."""
    qs = ReviewComment.objects.filter(rig=rig, reply_to__isnull=True)
    roots = list(qs.order_by("created_at", "id"))
    replies: dict[int, list[ReviewComment]] = defaultdict(list)
    for reply in ReviewComment.objects.filter(reply_to__in=[c.id for c in roots]).order_by(
        "created_at", "id"
    ):
        replies[reply.reply_to_id].append(reply)
    return [Thread(c, replies[c.id]) for c in roots]


def _place(target: diffs.DiffTarget, threads: list[Thread]) -> None:
    """Where each line comment's line is in the diff shown (git, cached): a comment on a head
    line follows it through later commits; one on a deleted line stays while the base does."""
    anchors = []
    for thread in threads:
        c = thread.comment
        if not (c.path and c.line):
            continue
        if c.side == ReviewComment.Side.OLD:
            same = c.base_commit == target.base
            thread.line_now, thread.outdated = (c.line if same else None), not same
        elif c.commit:
            anchors.append(diffs.LineAnchor(c.id, c.commit, c.path, c.line))
    if anchors:
        found = diffs.lines_now(target.repository, target.head, anchors)
        for thread in threads:
            if thread.id in found:
                thread.line_now = found[thread.id]
                thread.outdated = thread.line_now is None


def _context(
    target: diffs.DiffTarget | None, error: str, rig: Rig, mr: MergeRequest | None
) -> dict[str, Any]:
    event_id = last_event_id()
    threads = _threads(rig)
    tree = None
    if target is not None:
        try:
            tree = diffs.diff_tree(target)
        except diffs.DiffUnavailable as exc:
            error = str(exc)
    paths = {f.path for f in tree.files} if tree else set()
    per_file: dict[str, int] = defaultdict(int)
    for thread in threads:
        if thread.comment.path and thread.comment.state == ReviewComment.State.OPEN:
            per_file[thread.comment.path] += 1
    return {
        "rig": rig,
        "merge_request": mr,
        "target": target,
        "error": error,
        "tree": tree,
        "dirs": [
            {"dir": d, "files": [{"f": f, "open": per_file.get(f.path, 0)} for f in d.files]}
            for d in (tree.dirs() if tree else [])
        ],
        "whole": [t for t in threads if not t.comment.path],
        "elsewhere": [t for t in threads if t.comment.path and t.comment.path not in paths],
        "open_per_file": dict(per_file),
        "open_count": sum(1 for t in threads if t.comment.state == ReviewComment.State.OPEN),
        "large_lines": diffs.LARGE_FILE_LINES,
        "groups": f"rig.{rig.id}",
        "last_event_id": event_id,
    }


def rig_diff_page(rig_id: int) -> dict[str, Any]:
    """A rig's change against its merge base: the tree and the whole-change comments. Three
    queries (the rig, the threads and their answers) and the event id."""
    rig = get_object_or_404(Rig.objects.select_related("repository", "agent"), pk=rig_id)
    try:
        target, error = diffs.rig_diff_target(rig), ""
    except diffs.DiffUnavailable as exc:
        target, error = None, str(exc)
    awaiting = (
        MergeRequest.objects.filter(rig=rig, state=MergeRequest.State.AWAITING_REVIEW)
        .order_by("-id")
        .first()
    )
    return {
        **_context(target, error, rig, None),
        "kind": "rig",
        "pk": rig.id,
        "awaiting": awaiting,
    }


def merge_request_diff_page(mr_id: int) -> dict[str, Any]:
    qs = MergeRequest.objects.select_related("repository", "rig", "rig__repository", "rig__agent")
    mr = get_object_or_404(qs, pk=mr_id)
    if mr.rig is None:
        return {"error": "this merge request lands a whole branch, not a rig's change"}
    try:
        target, error = diffs.merge_request_diff_target(mr), ""
    except diffs.DiffUnavailable as exc:
        target, error = None, str(exc)
    approvals = list(mr.approvals.all())  # the audit trail, oldest first
    approved_now = {
        a.by for a in approvals if a.verdict == "approved" and a.commit == mr.source_commit
    }
    review = {
        "approvals": approvals,
        "approved_now": len(approved_now),
        "waiting": mr.state == MergeRequest.State.AWAITING_REVIEW,
        "can_request_changes": mr.state
        in (MergeRequest.State.AWAITING_REVIEW, MergeRequest.State.QUEUED),
    }
    return {
        **_context(target, error, mr.rig, mr),
        "kind": "merge_request",
        "pk": mr.id,
        "review": review,
    }


def leg_diff_url_args(leg_id: int) -> tuple[str, int]:
    """Where a leg's diff is: its rig's landed merge request once landed, else its rig's
    change. (`board:<name>`, id)"""
    leg = get_object_or_404(Leg.objects.select_related("rig"), pk=leg_id)
    if leg.rig_id is None:
        return "", 0
    landed = (
        MergeRequest.objects.filter(rig_id=leg.rig_id, state=MergeRequest.State.MERGED)
        .order_by("-finished_at", "-id")
        .values_list("id", flat=True)
        .first()
    )
    if leg.state == Leg.State.LANDED and landed:
        return "mr-diff", landed
    return "rig-diff", leg.rig_id


def _target(kind: str, pk: int) -> tuple[diffs.DiffTarget, Rig]:
    if kind == "rig":
        rig = get_object_or_404(Rig.objects.select_related("repository", "agent"), pk=pk)
        return diffs.rig_diff_target(rig), rig
    qs = MergeRequest.objects.select_related("repository", "rig", "rig__repository")
    mr = get_object_or_404(qs, pk=pk, rig__isnull=False)
    return diffs.merge_request_diff_target(mr), mr.rig


def _annotated(rows, by_line: dict[tuple[str, int], list[Thread]]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        threads = []
        if row.kind in " +" and row.new:
            threads += by_line.get(("new", row.new), [])
        if row.kind == "-" and row.old:
            threads += by_line.get(("old", row.old), [])
        out.append({"row": row, "threads": threads})
    return out


def _split_annotated(rows, by_line) -> list[dict[str, Any]]:
    out = []
    for pair in diffs.split_rows(rows):
        threads = []
        if pair.left is not None and pair.left.kind == "-":
            threads += by_line.get(("old", pair.left.old), [])
        if pair.right is not None and pair.right.kind in " +" and pair.right.new:
            threads += by_line.get(("new", pair.right.new), [])
        out.append({"left": pair.left, "right": pair.right, "threads": threads})
    return out


def diff_file_fragment(kind: str, pk: int, path: str, view: str, full: bool) -> dict[str, Any]:
    """One file of a change, on demand: its rows (unified or side by side), folded runs, the
    threads on its lines (placed where their line is now; outdated ones listed above the
    file). A file in the tree only; a large one only when asked (`full`). Raises
    `DiffUnavailable`, or `LookupError` for a path the change does not touch."""
    target, rig = _target(kind, pk)
    tree = diffs.diff_tree(target)
    entry = tree.find(path)
    if entry is None:
        raise LookupError(f"'{path}' is not a file this change touches")
    threads = [t for t in _threads(rig) if t.comment.path == path]
    _place(target, threads)
    context: dict[str, Any] = {
        "target": target,
        "file": entry,
        "rig": rig,
        "kind": kind,
        "pk": pk,
        "view": view,
        "outdated": [t for t in threads if t.outdated],
        "file_threads": [t for t in threads if not t.comment.line],
        "merge_request_id": pk if kind == "merge_request" else None,
    }
    if (entry.large and not full) or entry.binary:
        return {**context, "summarised": True}
    view_ = diffs.diff_file_view(target, path, entry.old_path)
    by_line: dict[tuple[str, int], list[Thread]] = defaultdict(list)
    for t in threads:
        if t.line_now is not None and not t.outdated:
            by_line[(t.comment.side, t.line_now)].append(t)
    segments = []
    for segment in view_.segments:
        rows = (
            _split_annotated(segment.rows, by_line)
            if view == "split"
            else _annotated(segment.rows, by_line)
        )
        folded = segment.folded and not any(r["threads"] for r in rows)
        segments.append({"folded": folded, "rows": rows, "count": len(segment.rows)})
    return {**context, "fileview": view_, "segments": segments, "summarised": False}
