"""Review comments (`review-comments/`): people comment on a rig's change (the board's diff view
does it through the same service), the rig's agent reads them (`gt review`), answers
(`reply/`) and resolves them (`resolve/`). Thin: validate, check who may, call one service."""

from functools import partial

from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api import FieldErrors
from common.filters import list_param, query_check
from common.params import optional_id
from convoys.api.base import body, get_object
from convoys.models import ReviewComment
from convoys.serializers import (
    ReviewCommentCreateSerializer,
    ReviewCommentSerializer,
    ReviewReplyCreateSerializer,
    ReviewResolveSerializer,
)
from convoys.services import reviews
from rigs.auth import calling_agent
from rigs.models import MergeApproval, MergeRequest, Rig
from rigs.permissions import is_operator, owns_rig
from rigs.serializers import MergeRequestReviewSerializer, MergeRequestSerializer

STATES = ReviewComment.State.values


class ReviewPagination(LimitOffsetPagination):
    default_limit = 50
    max_limit = 200


def _threads():
    return ReviewComment.objects.filter(reply_to__isnull=True).prefetch_related("replies")


def _comment(request: Request, pk) -> ReviewComment:
    """One thread by id (an answer's id finds its thread); an agent reads its own rigs' only."""
    comment = get_object(
        ReviewComment.objects.select_related("rig", "reply_to", "merge_request"),
        "review comment",
        pk,
    )
    agent = calling_agent(request)
    if agent is not None and comment.rig.agent_id != agent.pk:
        raise PermissionDenied(
            f"review comment #{comment.pk} is on rig {comment.rig.slug}, not yours: agents read "
            "the reviews of their own rigs."
        )
    return comment


def _thread(comment: ReviewComment) -> ReviewComment:
    return _threads().select_related("rig").get(pk=comment.reply_to_id or comment.pk)


def _check_write(request: Request, comment: ReviewComment) -> None:
    if is_operator(request.user) or owns_rig(request, comment.rig):
        return
    if calling_agent(request) is not None:
        raise PermissionDenied("Agents answer and resolve the reviews of their own rigs only.")
    raise PermissionDenied("Only operators and the rig's agent may do this.")


class ReviewCommentListView(generics.ListAPIView):
    """Review comments, as threads (each with its answers), oldest first. Agents see only
    their own rigs' (`gt review`); people with a role see all. `POST` adds one (operators
    only): on a line of a file of the rig's change (`path`, `line`, `side`, `commit`: the
    diff's head), or on the whole change (no `path`). The rig's agent gets a `review_comment`
    notice with the file, the line, its text and the comment."""

    serializer_class = ReviewCommentSerializer
    pagination_class = ReviewPagination
    list_params = [
        list_param("rig", "only this rig's reviews", "integer", minimum=1),
        list_param("merge_request", "only those made on this merge request", "integer", minimum=1),
        list_param("state", "only open or only resolved threads", enum=STATES),
    ]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return ReviewComment.objects.none()
        params = self.request.query_params
        errors = FieldErrors()
        rig = errors.check(partial(optional_id, params, "rig"))
        merge_request = errors.check(partial(optional_id, params, "merge_request"))
        state = params.get("state", "").strip()
        if state and state not in STATES:
            errors.add(ValidationError({"state": f"'{state}' is not one of {', '.join(STATES)}."}))
        errors.check(partial(query_check, self.request, ReviewComment.objects.none(), self))
        errors.raise_any()
        qs = _threads()
        agent = calling_agent(self.request)
        if agent is not None:
            if rig is not None and not Rig.objects.filter(pk=rig, agent=agent).exists():
                raise PermissionDenied(f"rig {rig} is not yours; agents read their own reviews.")
            qs = qs.filter(rig__agent=agent)
        if rig is not None:
            qs = qs.filter(rig_id=rig)
        if merge_request is not None:
            qs = qs.filter(merge_request_id=merge_request)
        if state:
            qs = qs.filter(state=state)
        return qs.order_by("created_at", "id")

    @extend_schema(summary="List review comments")
    def get(self, request: Request, *args, **kwargs) -> Response:
        """Review comments as threads, oldest first (agents: their own rigs')."""
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Comment on a rig's change",
        description="Operators only: a comment on a line of a file of the rig's change (`path`, "
        "`line`, `side`, `commit`), or on the whole change. The rig's inbox gets a "
        "`review_comment` notice.",
        request=ReviewCommentCreateSerializer,
        responses={201: ReviewCommentSerializer},
    )
    def post(self, request: Request) -> Response:
        if not is_operator(request.user):
            who = "agents answer them" if calling_agent(request) else "ask for the operator role"
            raise PermissionDenied(f"Only operators comment on a change ({who}).")
        data = body(ReviewCommentCreateSerializer, request)
        rig = get_object(Rig.objects.select_related("repository"), "rig", data["rig"], "rig")
        mr_id = data.get("merge_request")
        merge_request = (
            get_object(MergeRequest.objects.all(), "merge request", mr_id, "merge_request")
            if mr_id
            else None
        )
        comment = reviews.review_comment_add(
            rig=rig,
            text=data["text"],
            by=request.user.get_username(),
            path=data.get("path", ""),
            line=data.get("line"),
            side=data.get("side", "new"),
            commit=data.get("commit", ""),
            base_commit=data.get("base_commit", ""),
            excerpt=data.get("excerpt", ""),
            merge_request=merge_request,
        )
        return Response(
            ReviewCommentSerializer(_thread(comment)).data, status=status.HTTP_201_CREATED
        )


class ReviewCommentDetailView(APIView):
    """One review thread (an answer's id finds its thread)."""

    @extend_schema(
        summary="Read a review comment",
        description="One review thread with its answers (agents: their own rigs' only).",
        responses={200: ReviewCommentSerializer},
    )
    def get(self, request: Request, pk: int) -> Response:
        return Response(ReviewCommentSerializer(_thread(_comment(request, pk))).data)


class ReviewCommentReplyView(APIView):
    """Answer a review comment (`gt review reply ID "…"`): the rig's agent or an operator. A
    person's answer is told to the agent (the thread's notice is updated)."""

    @extend_schema(
        summary="Answer a review comment",
        description="The rig's agent or an operator adds an answer to the thread; 409 "
        "`already_resolved` once it is resolved.",
        request=ReviewReplyCreateSerializer,
        responses={201: ReviewCommentSerializer},
    )
    def post(self, request: Request, pk: int) -> Response:
        comment = _comment(request, pk)
        _check_write(request, comment)
        text = body(ReviewReplyCreateSerializer, request)["text"]
        agent = calling_agent(request)
        reviews.review_comment_reply(
            comment=comment,
            text=text,
            by=agent.name if agent else request.user.get_username(),
            by_agent=agent is not None,
        )
        return Response(
            ReviewCommentSerializer(_thread(comment)).data, status=status.HTTP_201_CREATED
        )


class ReviewCommentResolveView(APIView):
    """Resolve a review comment (`gt review resolve ID [--commit C]`): its notice is resolved
    too. The rig's agent or an operator."""

    @extend_schema(
        summary="Resolve a review comment",
        description="The rig's agent or an operator marks the thread resolved, optionally with "
        "the commit that addressed it; 409 `already_resolved` when it was.",
        request=ReviewResolveSerializer,
        responses={200: ReviewCommentSerializer},
    )
    def post(self, request: Request, pk: int) -> Response:
        comment = _comment(request, pk)
        _check_write(request, comment)
        data = body(ReviewResolveSerializer, request)
        agent = calling_agent(request)
        reviews.review_comment_resolve(
            comment=comment,
            by=agent.name if agent else request.user.get_username(),
            commit=data.get("commit", ""),
        )
        return Response(ReviewCommentSerializer(_thread(comment)).data)


class _MergeRequestVerdictView(APIView):
    verdict = ""

    def post(self, request: Request, pk: int) -> Response:
        if calling_agent(request) is not None:
            raise PermissionDenied("Agents never review merge requests: a person approves.")
        if not is_operator(request.user):
            raise PermissionDenied("Only operators review merge requests.")
        mr = get_object(
            MergeRequest.objects.select_related("rig", "repository"), "merge request", pk
        )
        data = body(MergeRequestReviewSerializer, request)
        reviews.merge_request_review(
            merge_request=mr,
            verdict=self.verdict,
            by=request.user.get_username(),
            commit=data["commit"],
            note=data.get("note", ""),
        )
        fresh = MergeRequest.objects.prefetch_related("approvals").get(pk=mr.pk)
        return Response(MergeRequestSerializer(fresh).data)


class MergeRequestApproveView(_MergeRequestVerdictView):
    """Approve a merge request's source commit (operators; agents get 403). Once it has
    `reviews_required` approvals of that commit it is queued for gating; new commits on the
    branch send it back to `awaiting_review`."""

    verdict = MergeApproval.Verdict.APPROVED

    @extend_schema(
        summary="Approve a merge request",
        description="Operators only (agents: 403). `commit` is the source commit the diff "
        "showed; 409 `stale_commit` when the request is at another one, `not_awaiting_review` "
        "when it waits for none.",
        request=MergeRequestReviewSerializer,
        responses={200: MergeRequestSerializer},
    )
    def post(self, request: Request, pk: int) -> Response:
        return super().post(request, pk)


class MergeRequestRequestChangesView(_MergeRequestVerdictView):
    """Ask for changes (operators; agents get 403): the request is cancelled, its rig goes back
    to work and its agent is told (with the open review comments)."""

    verdict = MergeApproval.Verdict.CHANGES_REQUESTED

    @extend_schema(
        summary="Request changes on a merge request",
        description="Operators only (agents: 403). Cancels the request and tells the rig's "
        "agent; `note` says what to change (required when no review comment is open).",
        request=MergeRequestReviewSerializer,
        responses={200: MergeRequestSerializer},
    )
    def post(self, request: Request, pk: int) -> Response:
        return super().post(request, pk)
