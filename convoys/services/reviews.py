"""Review comments on a rig's change (the board's diff view; `gt review`): a person comments on
a line or on the whole change, the rig's agent is told in its inbox (a `review_comment` notice
with the file, the line, its text then and the comment), and the agent answers (`gt review
reply`) or resolves it (`gt review resolve`, usually with the commit that fixed it).

One open notice per comment (topic `review:<id>`): a person's later answer in the thread
updates it; resolving the comment resolves it. Each write appends a `review.comment` event
on the rig (and its convoy), so an open diff page refreshes its threads."""

import re
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from common.errors import Refusal
from convoys.models import ReviewComment
from convoys.services.coordination import _convoy_ids, _line, text_check
from events.services import event_append
from notifications.models import Notification
from notifications.services import notices_resolve, notification_send
from rigs import services as rig_services
from rigs.models import MergeApproval, MergeRequest, Rig

Kind, Severity = Notification.Kind, Notification.Severity
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
PATH_MAX = 1024
EXCERPT_MAX = 500
TOPIC_PREFIX = "review"


class CommentResolved(Refusal):
    """A reply to, or a resolution of, a comment that is already resolved."""

    code = "already_resolved"
    field = "comment"


def review_topic(comment_id: int) -> str:
    return f"{TOPIC_PREFIX}:{comment_id}"


def _commit(value: Any, field: str, errors: dict[str, str]) -> str:
    text = value.strip().lower() if isinstance(value, str) else value
    if text in (None, ""):
        return ""
    if not isinstance(text, str) or not COMMIT_RE.match(text):
        errors[field] = "a full 40-character commit id (hexadecimal)."
        return ""
    return text


def _event(comment: ReviewComment, action: str) -> None:
    root = comment.reply_to_id or comment.pk
    event_append(
        "review.comment",
        {
            "comment": comment.pk,
            "thread": root,
            "rig": comment.rig_id,
            "path": comment.path,
            "line": comment.line,
            "author": comment.author,
            "state": comment.state,
            "action": action,
        },
        repository_id=comment.rig.repository_id,
        rig_id=comment.rig_id,
        convoy_id=_convoy_ids([comment.rig]).get(comment.rig_id),
    )


def _notice(comment: ReviewComment, text: str, author: str) -> Notification | None:
    """The rig's inbox gets (or has updated) the thread's one open notice."""
    root = comment.reply_to or comment
    where = root.where
    summary = f"{author} on {where}: {_line(text, 180)}"
    if comment.reply_to_id:
        summary = f"{author} answered on review comment #{root.pk} ({where}): {_line(text, 150)}"
    return notification_send(
        rig=root.rig,
        kind=Kind.REVIEW_COMMENT,
        severity=Severity.WARNING,
        summary=summary,
        action=f"Fix it in a commit, then `gt review resolve {root.pk}`; or answer with "
        f'`gt review reply {root.pk} "…"`.',
        changes={
            "comment": root.pk,
            "file": root.path,
            "line": root.line,
            "side": root.side,
            "excerpt": root.excerpt,
            "text": text,
            "commit": root.commit,
            "from": author,
        },
        topic=review_topic(root.pk),
        source_merge_request=root.merge_request,
        sender=author,
        convoy_id=_convoy_ids([root.rig]).get(root.rig_id),
    )


@transaction.atomic
def review_comment_add(
    *,
    rig: Rig,
    text: Any,
    by: str,
    path: Any = "",
    line: Any = None,
    side: Any = ReviewComment.Side.NEW,
    commit: Any = "",
    base_commit: Any = "",
    excerpt: Any = "",
    merge_request: MergeRequest | None = None,
) -> ReviewComment:
    """A person's comment on a rig's change: on ``line`` of ``path`` (``side`` new: the head's
    line; old: a deleted line of the base) as of ``commit``, or on the whole change (no path).
    The rig's agent is told in its inbox. Every bad field is named in one 400."""
    errors: dict[str, str] = {}
    try:
        text = text_check(text, "text")
    except ValidationError as exc:
        errors.update({k: " ".join(v) for k, v in exc.message_dict.items()})
    if not isinstance(path, str):
        errors["path"] = "a path (text), or empty for the whole change."
        path = ""
    path = path.strip()
    if (
        len(path) > PATH_MAX
        or "\x00" in path
        or path.startswith("/")
        or ".." in path.split("/")  # (a path in the repository never climbs out of it)
    ):
        errors["path"] = f"a repository-relative path of at most {PATH_MAX} characters."
    if side not in ReviewComment.Side.values:
        errors["side"] = "'new' (a line of the change's head) or 'old' (a deleted line)."
    if line in (None, ""):
        line = None
    elif isinstance(line, bool) or not isinstance(line, int | str) or not str(line).isdigit():
        errors["line"] = "a line number (1 or more)."
        line = None
    else:
        line = int(line)
        if line < 1:
            errors["line"] = "a line number (1 or more)."
    if line is not None and not path:
        errors["path"] = "a line comment needs the file's path."
    commit = _commit(commit, "commit", errors)
    base_commit = _commit(base_commit, "base_commit", errors)
    if path and not commit:
        errors.setdefault("commit", "a comment on a file needs the commit the diff showed.")
    if not isinstance(excerpt, str):
        errors["excerpt"] = "the line's text."
        excerpt = ""
    if merge_request is not None and merge_request.rig_id != rig.pk:
        errors["merge_request"] = f"merge request #{merge_request.pk} is not rig {rig.slug}'s."
    if rig.state == Rig.State.ARCHIVED:
        errors["rig"] = f"rig {rig.slug} is archived: nobody is left to read a review."
    if errors:
        raise ValidationError(errors)
    comment = ReviewComment.objects.create(
        rig=rig,
        merge_request=merge_request,
        author=by,
        commit=commit,
        base_commit=base_commit,
        path=path,
        side=side,
        line=line,
        excerpt=excerpt[:EXCERPT_MAX],
        text=text,
    )
    _notice(comment, text, by)
    _event(comment, "added")
    return comment


@transaction.atomic
def review_comment_reply(
    *, comment: ReviewComment, text: Any, by: str, by_agent: bool = False
) -> ReviewComment:
    """An answer in a comment's thread (`gt review reply`, or a person on the diff page). A
    person's answer is told to the rig's agent (the thread's notice is updated)."""
    root = comment.reply_to or comment
    if root.state == ReviewComment.State.RESOLVED:
        raise CommentResolved(
            f"review comment #{root.pk} is resolved ({root.resolved_by}): nothing to answer."
        )
    text = text_check(text, "text")
    reply = ReviewComment.objects.create(
        rig=root.rig,
        merge_request=root.merge_request,
        reply_to=root,
        author=by,
        by_agent=by_agent,
        commit=root.commit,
        path=root.path,
        side=root.side,
        line=root.line,
        text=text,
    )
    if not by_agent:
        _notice(reply, text, by)
    _event(reply, "replied")
    return reply


@transaction.atomic
def review_comment_resolve(*, comment: ReviewComment, by: str, commit: Any = "") -> ReviewComment:
    """Resolve a comment's thread (`gt review resolve ID [--commit C]`, or a person on the diff
    page): its notice is resolved too."""
    root = comment.reply_to or comment
    errors: dict[str, str] = {}
    commit = _commit(commit, "commit", errors)
    if errors:
        raise ValidationError(errors)
    updated = ReviewComment.objects.filter(pk=root.pk, state=ReviewComment.State.OPEN).update(
        state=ReviewComment.State.RESOLVED,
        resolved_by=by,
        resolved_commit=commit,
        resolved_at=timezone.now(),
    )
    if not updated:
        raise CommentResolved(f"review comment #{root.pk} is already resolved.")
    root.refresh_from_db()
    fixed = f" in {commit[:10]}" if commit else ""
    notices_resolve(
        notifications=Notification.objects.filter(
            rig_id=root.rig_id, topic=review_topic(root.pk), state=Notification.State.OPEN
        ),
        resolution=f"review comment #{root.pk} resolved by {by}{fixed}",
    )
    _event(root, "resolved")
    return root


@transaction.atomic
def merge_request_review(
    *, merge_request: MergeRequest, verdict: str, by: str, commit: Any, note: Any = ""
) -> MergeApproval:
    """An operator approves a merge request's commit, or asks for changes, on its diff page
    (or `POST merge-requests/{id}/approve/`, `.../request-changes/`). Asking for changes
    cancels the request (its rig goes back to work) and tells the agent, pointing at the open
    review comments. The verdict is kept on the request (`rigs.models.MergeApproval`)."""
    errors: dict[str, str] = {}
    commit = _commit(commit, "commit", errors)
    if not commit:
        errors.setdefault("commit", "the commit the diff showed (its full id).")
    if not isinstance(note, str):
        errors["note"] = "text."
        note = ""
    note = note.strip()
    if verdict == MergeApproval.Verdict.CHANGES_REQUESTED and not note:
        open_threads = ReviewComment.objects.filter(
            rig_id=merge_request.rig_id, reply_to__isnull=True, state=ReviewComment.State.OPEN
        ).exists()
        if not open_threads:
            errors["note"] = "say what to change (or comment on lines first)."
    if len(note) > 4000:
        errors["note"] = "at most 4,000 characters."
    if errors:
        raise ValidationError(errors)
    approval = rig_services.merge_request_review_record(
        merge_request=merge_request, verdict=verdict, by=by, commit=commit, note=note
    )
    rig = merge_request.rig
    if verdict == MergeApproval.Verdict.CHANGES_REQUESTED and rig is not None:
        open_count = ReviewComment.objects.filter(
            rig=rig, reply_to__isnull=True, state=ReviewComment.State.OPEN
        ).count()
        said = f": {_line(note, 160)}" if note else ""
        notification_send(
            rig=rig,
            kind=Kind.REVIEW_COMMENT,
            severity=Severity.WARNING,
            summary=f"{by} asked for changes on merge request #{merge_request.id}{said}",
            action=f"Read the {open_count} open review comment(s) with `gt review`, fix them in "
            "commits, resolve them (`gt review resolve ID`), then `gt done` again.",
            changes={
                "merge_request": merge_request.id,
                "commit": commit,
                "note": note,
                "open_comments": open_count,
                "from": by,
            },
            topic=f"{TOPIC_PREFIX}:mr:{merge_request.id}",
            source_merge_request=merge_request,
            sender=by,
            convoy_id=_convoy_ids([rig]).get(rig.pk),
        )
    return approval
