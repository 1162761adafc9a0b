"""Pages of the board and the small views behind their controls.

Thin: a form reads the input (`board.forms`), `board.pages` reads, one service writes. Every
page, fragment and POST needs a login with a role (`rigs.permissions.is_viewer`: a login with
no role gets 403, like the API); every write is a POST with CSRF from an operator
(`is_operator`, else 403). A request that asks for JSON (the page's scripts do) gets
`{"ok": true, "message": ...}` or `{"error": {"code", "message", "field", "errors"}}` with a
4xx; a plain form post is redirected back with the message shown on the page. Bad input (a
query string's `repository=²`) is a 400 page naming the field, never a 500.
"""

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.defaultfilters import pluralize
from django.templatetags.static import static
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from board import diffs as board_diffs
from board import forms, pages
from common.errors import Refusal, error_body, error_text
from convoys import services
from convoys.models import Convoy, ReviewComment
from convoys.services import coordination
from convoys.services import reviews as review_services
from notifications import services as notification_services
from notifications.models import Notification
from rigs import diffs as rig_diffs
from rigs import services as rig_services
from rigs.models import MergeApproval, MergeRequest, Rig
from rigs.permissions import is_admin, is_operator, is_viewer
from runner import budgets as run_budgets
from runner import services as run_services
from runner.models import AgentRun, Budget

S = Convoy.State
NO_ROLE = "Your account has no role: ask an admin to add you to 'viewer' or 'operator'."
NOT_OPERATOR = "Only operators may do this."
NOT_ADMIN = "Only admins may add repositories (a repository carries commands the server runs)."


class Refused(Refusal):
    """A move the board itself refuses (e.g. dragging into a derived column)."""


def _page(
    request: HttpRequest, template: str, context: dict[str, Any], status: int = 200
) -> HttpResponse:
    context.setdefault("can_operate", is_operator(request.user))
    context.setdefault("can_view", is_viewer(request.user))
    return render(request, template, context, status=status)


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _error_body(exc: Refusal | ValidationError) -> dict[str, Any]:
    """The API's error body (`code`, `message`, `field`, `errors`) for a refusal or bad input:
    the message says everything, `errors` has each field's problem."""
    if isinstance(exc, Refusal):
        return exc.as_body()
    by_field = exc.error_dict.items() if hasattr(exc, "error_dict") else [(None, exc.error_list)]
    errors = [
        {
            "field": None if name == NON_FIELD_ERRORS else name,
            "code": error.code or "invalid",
            "message": " ".join(error.messages),
        }
        for name, field_errors in by_field
        for error in field_errors
    ]
    return error_body("invalid", error_text(exc), errors[0]["field"] if errors else None, errors)


def _error_page(request: HttpRequest, exc: Refusal | ValidationError, status: int) -> HttpResponse:
    """A refusal with no page to go back to (no role, bad query string): JSON, or a page that
    says why."""
    if _wants_json(request):
        return JsonResponse(_error_body(exc), status=status)
    context = {"status": status, "message": error_text(exc)}
    return _page(request, "board/error.html", context, status=status)


def _forbidden(request: HttpRequest, message: str, code: str = "forbidden") -> HttpResponse:
    return _error_page(request, Refusal(message, code=code, status=403), 403)


def _bad_input(request: HttpRequest, form) -> HttpResponse:
    """400 for a form (a query string) that does not parse, naming its fields."""
    return _error_page(request, ValidationError(form.errors.as_data()), 400)


def role_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Every board view: a login (anonymous people go to the login page) with a role."""

    @wraps(view)
    def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not is_viewer(request.user):
            return _forbidden(request, NO_ROLE, code="no_role")
        return view(request, *args, **kwargs)

    return login_required(checked)


def operator_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """An operator action: a login with the operator role, checked before anything is looked
    up (a viewer gets the same 403, in the format it asked for, whatever the id)."""

    @wraps(view)
    def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not is_viewer(request.user):
            return _forbidden(request, NO_ROLE, code="no_role")
        if not is_operator(request.user):
            return _forbidden(request, NOT_OPERATOR)
        return view(request, *args, **kwargs)

    return login_required(checked)


def _back(request: HttpRequest, default: str) -> str:
    target = request.POST.get("next") or request.headers.get("Referer") or default
    # a path or a URL of this host only: a bare word would be read as a URL name by redirect()
    absolute = target.startswith(("/", "http://", "https://"))
    if absolute and url_has_allowed_host_and_scheme(
        target, {request.get_host()}, request.is_secure()
    ):
        return target
    return default


def _act(
    request: HttpRequest,
    action: Callable[[], str],
    *,
    default_next: str,
    refused_extra: Callable[[], dict[str, Any]] | None = None,
) -> HttpResponse:
    """Run one operator action and answer the way the caller asked (JSON or redirect). The one
    place the board turns a refusal into an answer: a `Refusal` with its status, a Django
    ValidationError with 400, both shown as `common.errors.error_text`."""
    if not is_operator(request.user):
        return _forbidden(request, NOT_OPERATOR)
    try:
        message = action()
    except (ValidationError, Refusal) as exc:
        status = exc.status if isinstance(exc, Refusal) else 400
        if _wants_json(request):
            extra = refused_extra() if refused_extra else {}
            return JsonResponse({**_error_body(exc), **extra}, status=status)
        messages.error(request, error_text(exc))
        return redirect(_back(request, default_next))
    if _wants_json(request):
        return JsonResponse({"ok": True, "message": message})
    messages.success(request, message)
    return redirect(_back(request, default_next))


# --- pages -------------------------------------------------------------------------------------


def _filters(request: HttpRequest) -> forms.BoardFilterForm:
    return forms.BoardFilterForm(request.GET)


@role_required
@require_GET
def board_view(request: HttpRequest) -> HttpResponse:
    form = _filters(request)
    if not form.is_valid():
        return _bad_input(request, form)
    context = pages.board_page(form.filters())
    return _page(request, "board/board.html", {**context, "nav": "board"})


@role_required
@require_GET
def board_columns(request: HttpRequest) -> HttpResponse:
    """The columns alone: the filters and a burst of live updates swap these in."""
    form = _filters(request)
    if not form.is_valid():
        return _bad_input(request, form)
    return _page(request, "board/_columns.html", pages.board_page(form.filters()))


@role_required
@require_GET
def board_card(request: HttpRequest, pk: int) -> HttpResponse:
    """One card, for a live update; 204 when the page's filters hide it (or it is gone)."""
    form = _filters(request)
    if not form.is_valid():
        return _bad_input(request, form)
    card = pages.board_card(pk, form.filters())
    if card is None:
        return HttpResponse(status=204)
    return _page(request, "board/_card.html", {"card": card})


@role_required
@require_GET
def convoy_detail(request: HttpRequest, pk: int) -> HttpResponse:
    feed = forms.FeedFilterForm(request.GET)
    if not feed.is_valid():
        return _bad_input(request, feed)
    try:
        context = pages.convoy_page(pk, feed=feed.filters())
    except ValidationError as exc:  # a feed_rig that does not work this convoy
        return _error_page(request, exc, 400)
    return _page(request, "board/convoy.html", context)


@role_required
@require_GET
def convoy_live(request: HttpRequest, pk: int) -> HttpResponse:
    return _page(request, "board/_convoy_live.html", pages.convoy_page(pk))


@role_required
@require_GET
def convoy_feed(request: HttpRequest, pk: int) -> HttpResponse:
    """The convoy page's cascade feed alone (its filters and page in the query string), for a
    live refresh or a change of filter."""
    feed = forms.FeedFilterForm(request.GET)
    if not feed.is_valid():
        return _bad_input(request, feed)
    try:
        context = pages.convoy_feed_page(pk, feed.filters())
    except ValidationError as exc:
        return _error_page(request, exc, 400)
    return _page(request, "board/_convoy_feed.html", context)


@role_required
@require_GET
def rig_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return _page(request, "board/rig.html", pages.rig_page(pk))


@role_required
@require_GET
def rig_live(request: HttpRequest, pk: int) -> HttpResponse:
    return _page(request, "board/_rig_live.html", pages.rig_page(pk))


def _repositories(
    request: HttpRequest, form: forms.AddRepositoryForm | None = None, status: int = 200
) -> HttpResponse:
    """The repositories page; admins also get the "Add repository" form (`form` when posted)."""
    admin = is_admin(request.user)
    if admin and form is None:
        form = forms.AddRepositoryForm(admin=True)
    context = {**pages.repositories_page(), "nav": "queues", "can_admin": admin, "form": form}
    return _page(request, "board/repositories.html", context, status=status)


@role_required
@require_GET
def repository_list(request: HttpRequest) -> HttpResponse:
    return _repositories(request)


@role_required
@require_POST
def repository_add(request: HttpRequest) -> HttpResponse:
    """Register a repository through `repository_register` (the API's service and checks), for
    admins only: the form sets commands the server runs. Errors are shown beside their field."""
    if not is_admin(request.user):
        return _forbidden(request, NOT_ADMIN)
    form = forms.AddRepositoryForm(request.POST, admin=True)
    if form.is_valid():
        try:
            repository = rig_services.repository_register(**form.register_input())
        except ValidationError as exc:
            form.add_service_errors(exc)
        else:
            messages.success(
                request,
                f"Repository '{repository.name}' registered at {repository.path} (target "
                f"{repository.target_branch}). Next: a convoy on it (New convoy), whose legs "
                "get rigs on it.",
            )
            return redirect("board:repositories")
    return _repositories(request, form, status=400)


@role_required
@require_GET
def merge_queue(request: HttpRequest, pk: int) -> HttpResponse:
    return _page(request, "board/queue.html", {**pages.merge_queue_page(pk), "nav": "queues"})


@role_required
@require_GET
def merge_queue_live(request: HttpRequest, pk: int) -> HttpResponse:
    return _page(request, "board/_queue_live.html", pages.merge_queue_page(pk))


# --- convoys: create, move, launch, cancel -----------------------------------------------------


@role_required
def convoy_new(request: HttpRequest) -> HttpResponse:
    if not is_operator(request.user):
        return _forbidden(request, "Only operators may create convoys.")
    form = forms.NewConvoyForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            convoy = services.convoy_create(**form.convoy_input(), created_by=request.user)
        except ValidationError as exc:
            form.add_service_errors(exc)
        else:
            messages.success(request, f"Convoy '{convoy.title}' created as a draft.")
            return redirect("board:convoy-detail", pk=convoy.pk)
    errors, leg_errors = form.errors, form.leg_errors
    return _page(
        request,
        "board/convoy_new.html",
        {
            **pages.convoy_new_page(),
            "form": form.form,
            "legs": form.legs,
            "errors": errors,
            "leg_errors": leg_errors,
            "nav": "new",
        },
        status=400 if errors or leg_errors else 200,
    )


@role_required
@require_POST
def convoy_import(request: HttpRequest) -> HttpResponse:
    """A convoy from a Markdown plan (uploaded or pasted): created, then its page; an invalid
    plan shows every error with its line on the New convoy page (400), nothing created."""
    if not is_operator(request.user):
        return _forbidden(request, "Only operators may create convoys.")
    form = forms.PlanImportForm(request.POST, request.FILES)
    plan_errors: list = []
    general = ""
    if form.is_valid():
        data = form.cleaned_data
        try:
            convoy, beads = services.convoy_import(
                repository=data["repository"],
                plan=data["plan"],
                launch=data["launch"],
                created_by=request.user,
            )
        except services.PlanInvalid as exc:
            plan_errors = exc.errors
        except (ValidationError, Refusal) as exc:  # e.g. the launch refused
            general = error_text(exc)
        else:
            done = "imported and launched" if data["launch"] else "imported as a draft"
            legs = convoy.legs.count()
            messages.success(
                request,
                f"Convoy '{convoy.title}' {done}: {legs} leg{pluralize(legs)}, "
                f"{len(beads)} bead{pluralize(len(beads))}.",
            )
            return redirect("board:convoy-detail", pk=convoy.pk)
    new = forms.NewConvoyForm()
    return _page(
        request,
        "board/convoy_new.html",
        {
            **pages.convoy_new_page(),
            "form": new.form,
            "legs": new.legs,
            "errors": {},
            "import_form": form,
            "import_errors": {
                **{name: " ".join(msgs) for name, msgs in form.errors.items()},
                **({"plan": general} if general else {}),
            },
            "plan_errors": plan_errors,
            "nav": "new",
        },
        status=400,
    )


def _move(convoy: Convoy, to: str, reason: str) -> str:
    """Drag between columns: draft → launched launches, anything → cancelled cancels; the
    derived columns refuse with the reason."""
    if to == convoy.state:
        return f"'{convoy.title}' is already {to}."
    if to == S.CANCELLED:
        services.convoy_cancel(convoy=convoy, reason=reason)
        return f"'{convoy.title}' cancelled."
    if to == S.LAUNCHED:
        if convoy.state != S.DRAFT:
            raise Refused(
                f"only a draft launches; '{convoy.title}' is {convoy.state} and its state "
                "follows its legs"
            )
        services.convoy_launch(convoy=convoy)
        return f"'{convoy.title}' launched."
    if to in pages.DERIVED_COLUMNS:
        raise Refused(pages.DERIVED_COLUMNS[to])
    if to == S.DRAFT:
        raise Refused("a convoy cannot go back to draft")
    raise Refused(f"unknown column '{to}'")


@operator_required
@require_POST
def convoy_move(request: HttpRequest, pk: int) -> HttpResponse:
    convoy = get_object_or_404(Convoy, pk=pk)
    to = request.POST.get("to", "")

    def action() -> str:
        return _move(convoy, to, reason=f"moved on the board by {request.user.get_username()}")

    def where_it_is() -> dict[str, Any]:
        # The card snaps back to the column of the convoy's real state.
        return {"state": Convoy.objects.filter(pk=pk).values_list("state", flat=True).first()}

    return _act(request, action, default_next=reverse("board:board"), refused_extra=where_it_is)


@operator_required
@require_POST
def convoy_launch(request: HttpRequest, pk: int) -> HttpResponse:
    convoy = get_object_or_404(Convoy, pk=pk)

    def action() -> str:
        services.convoy_launch(convoy=convoy)
        return f"'{convoy.title}' launched."

    return _act(request, action, default_next=reverse("board:convoy-detail", args=[pk]))


@operator_required
@require_POST
def convoy_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    convoy = get_object_or_404(Convoy, pk=pk)
    reason = f"cancelled by {request.user.get_username()}"
    return _act(
        request,
        lambda: _move(convoy, S.CANCELLED, reason),
        default_next=reverse("board:convoy-detail", args=[pk]),
    )


@operator_required
@require_POST
def convoy_landing_retry(request: HttpRequest, pk: int) -> HttpResponse:
    convoy = get_object_or_404(Convoy, pk=pk)

    def action() -> str:
        services.convoy_landing_retry(convoy=convoy)
        return f"Landing of '{convoy.title}' queued again."

    return _act(request, action, default_next=reverse("board:convoy-detail", args=[pk]))


# --- rigs: request merge, retry, sync, teardown; notifications: ack ----------------------------


@operator_required
@require_POST
def rig_merge(request: HttpRequest, pk: int) -> HttpResponse:
    """Request a merge through the one service (`rig_merge_request`): its refusals (open work,
    finished work) are shown as they are; the form's `force` overrides open work."""
    rig = get_object_or_404(Rig.objects.select_related("repository"), pk=pk)
    form = forms.RigMergeForm(request.POST)

    def action() -> str:
        if not form.is_valid():  # (after the role check, in _act)
            raise ValidationError(form.errors.as_data())
        mr = services.rig_merge_request(
            rig=rig, requested_by=request.user.get_username(), force=form.cleaned_data["force"]
        )
        forced = " (forced over open work)" if mr.forced else ""
        return f"Merge request #{mr.id} queued{forced}: {rig.branch} → {mr.target_branch}."

    return _act(request, action, default_next=reverse("board:rig-detail", args=[pk]))


@operator_required
@require_POST
def rig_retry(request: HttpRequest, pk: int) -> HttpResponse:
    rig = get_object_or_404(Rig, pk=pk)

    def action() -> str:
        rig_services.rig_retry(rig=rig)
        return f"Rig {rig.slug} is being provisioned again."

    return _act(request, action, default_next=reverse("board:rig-detail", args=[pk]))


@operator_required
@require_POST
def rig_sync(request: HttpRequest, pk: int) -> HttpResponse:
    rig = get_object_or_404(Rig, pk=pk)

    def action() -> str:
        rig_services.rig_sync_request(rig=rig)
        return f"Rig {rig.slug} will be synced with its branch on disk."

    return _act(request, action, default_next=reverse("board:rig-detail", args=[pk]))


@operator_required
@require_POST
def rig_teardown(request: HttpRequest, pk: int) -> HttpResponse:
    rig = get_object_or_404(Rig.objects.select_related("repository"), pk=pk)
    force = request.POST.get("force") in ("1", "on", "true")

    def action() -> str:
        rig_services.rig_teardown_request(
            rig=rig, force=force, requested_by=request.user.get_username()
        )
        return (
            f"Teardown of rig {rig.slug} requested"
            + (" (forced: its work is archived first)." if force else ".")
            + " A worker re-checks for unmerged work before removing anything."
        )

    return _act(request, action, default_next=reverse("board:rig-detail", args=[pk]))


# --- agent runs: launch, stop ------------------------------------------------------------------


@operator_required
@require_POST
def rig_launch(request: HttpRequest, pk: int) -> HttpResponse:
    """Launch the rig's agent (its runtime command in the rig's worktree) as a new run."""
    rig = get_object_or_404(Rig.objects.select_related("agent", "repository"), pk=pk)

    def action() -> str:
        who = request.user.get_username()
        run = run_services.agent_run_request(
            rig=rig, requested_by=who, reason=f"launched by {who} from the board", by_person=True
        )
        return (
            f"Agent {run.agent.name} launched in rig {rig.slug} as run #{run.id}: it starts "
            "as soon as the rig is ready and an agent slot is free."
        )

    return _act(request, action, default_next=reverse("board:rig-detail", args=[pk]))


@operator_required
@require_POST
def run_stop(request: HttpRequest, pk: int) -> HttpResponse:
    """Stop a run: a queued one is cancelled, a live one's processes are terminated."""
    run = get_object_or_404(AgentRun.objects.select_related("agent", "rig"), pk=pk)

    def action() -> str:
        stopped = run_services.agent_run_stop(run=run, requested_by=request.user.get_username())
        if stopped.state == AgentRun.State.CANCELLED:
            return f"Run #{run.id} was cancelled before it started."
        grace = settings.GASTOWN_RUN_STOP_GRACE_SECONDS
        return f"Stopping run #{run.id}: its processes get SIGTERM, then SIGKILL after {grace:g} s."

    return _act(request, action, default_next=reverse("board:rig-detail", args=[run.rig_id]))


@operator_required
@require_POST
def notification_ack(request: HttpRequest, pk: int) -> HttpResponse:
    notification = get_object_or_404(Notification, pk=pk)

    def action() -> str:
        notification_services.notification_ack(notification=notification)
        return "Notification acknowledged."

    return _act(
        request, action, default_next=reverse("board:rig-detail", args=[notification.rig_id])
    )


# --- escalations: questions to a person, answered here ----------------------------------------


@operator_required
@require_POST
def notification_answer(request: HttpRequest, pk: int) -> HttpResponse:
    """Answer an escalation or an ended turn: the answer reaches the agent's inbox."""
    notification = get_object_or_404(Notification, pk=pk)
    form = forms.AnswerForm(request.POST)

    def action() -> str:
        if not form.is_valid():
            raise ValidationError(form.errors.as_data())
        _, reply = coordination.notice_answer(
            notification=notification,
            answer=form.cleaned_data["answer"],
            by=request.user.get_username(),
        )
        where = f" (#{reply.id} in rig {notification.rig.slug}'s inbox)" if reply else ""
        return f"Answered #{notification.id}: the agent gets your answer{where}."

    return _act(
        request, action, default_next=reverse("board:rig-detail", args=[notification.rig_id])
    )


@role_required
@require_GET
def escalations(request: HttpRequest) -> HttpResponse:
    """Every open question to a person (escalations, ended turns), with an answer form."""
    return _page(request, "board/escalations.html", pages.escalations_page())


@role_required
@require_GET
def escalations_live(request: HttpRequest) -> HttpResponse:
    return _page(request, "board/_escalations_live.html", pages.escalations_page())


@role_required
@require_GET
def escalations_badge(request: HttpRequest) -> HttpResponse:
    """The header's count of open questions, re-fetched live."""
    return render(request, "board/_escalations_badge.html", {})


def favicon(request: HttpRequest) -> HttpResponse:
    """`/favicon.ico`: browsers ask for it whatever a page links (the API docs, a JSON answer);
    it is the board's SVG icon."""
    return redirect(static("gastown/favicon.svg"), permanent=True)


# --- budgets: limits on what agents spend --------------------------------------------------------


def _budgets(
    request: HttpRequest, form: forms.BudgetSetForm | None = None, status: int = 200
) -> HttpResponse:
    context = pages.budgets_page()
    if form is None:
        form = forms.BudgetSetForm(targets=context["targets"])
    return _page(request, "board/budgets.html", {**context, "form": form}, status=status)


@role_required
@require_GET
def budgets(request: HttpRequest) -> HttpResponse:
    """Every budget with a bar of its spend; operators also get the "Set a limit" form."""
    return _budgets(request)


@operator_required
@require_POST
def budget_set(request: HttpRequest) -> HttpResponse:
    """Set a limit (a target's budget for a window is changed, or made) through
    `runner.budgets.budget_save`, which checks it at once. Errors are shown beside the field."""
    if not is_operator(request.user):
        return _forbidden(request, NOT_OPERATOR)
    form = forms.BudgetSetForm(request.POST, targets=pages.budgets_page()["targets"])
    if form.is_valid():
        try:
            budget = run_budgets.budget_save(budget=form.budget(), by=request.user.get_username())
        except ValidationError as exc:
            form.add_service_errors(exc)
        else:
            messages.success(request, f"Budget set: the {budget}.")
            return redirect("board:budgets")
    return _budgets(request, form, status=400)


@operator_required
@require_POST
def budget_delete(request: HttpRequest, pk: int) -> HttpResponse:
    queryset = Budget.objects.select_related("agent", "repository", "convoy")
    budget = get_object_or_404(queryset, pk=pk)

    def action() -> str:
        run_budgets.budget_delete(budget=budget, by=request.user.get_username())
        return f"Budget deleted: the {budget}."

    return _act(request, action, default_next=reverse("board:budgets"))


def healthz(request: HttpRequest) -> JsonResponse:
    """`/healthz` (outside the board's namespace, no login): the database answers. Also the
    server's version, which `gt --version` shows beside its own."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse(
        {"status": "ok", "database": connection.vendor, "version": settings.GASTOWN_VERSION}
    )


# --- review: the diff view, comments on it --------------------------------------------------------


def _diff_page(request: HttpRequest, context: dict[str, Any]) -> HttpResponse:
    """The page, or (`?part=threads`) its review threads alone, for a live refresh."""
    if request.GET.get("part") == "threads":
        return _page(request, "board/_diff_threads.html", context)
    return _page(request, "board/diff.html", context)


@role_required
@require_GET
def rig_diff(request: HttpRequest, pk: int) -> HttpResponse:
    """A rig's change against its merge base: the file tree at once, each file on demand."""
    return _diff_page(request, board_diffs.rig_diff_page(pk))


@role_required
@require_GET
def merge_request_diff(request: HttpRequest, pk: int) -> HttpResponse:
    """A merge request's candidate (or, landed, exactly what it did to the target)."""
    return _diff_page(request, board_diffs.merge_request_diff_page(pk))


@role_required
@require_GET
def leg_diff(request: HttpRequest, pk: int) -> HttpResponse:
    """A leg's change: its landed merge request once landed, else its rig's branch."""
    name, target = board_diffs.leg_diff_url_args(pk)
    if not name:
        return _error_page(
            request, Refusal("this leg has no rig yet: nothing to show", status=404), 404
        )
    return redirect(f"board:{name}", pk=target)


def _diff_file(request: HttpRequest, kind: str, pk: int) -> HttpResponse:
    form = forms.DiffFileForm(request.GET)
    if not form.is_valid():
        return _bad_input(request, form)
    data = form.cleaned_data
    try:
        context = board_diffs.diff_file_fragment(
            kind, pk, data["path"], data["view"] or "unified", data["full"]
        )
    except rig_diffs.DiffUnavailable as exc:
        return _error_page(request, exc, exc.status)
    except LookupError as exc:
        return _error_page(request, ValidationError({"path": str(exc)}), 400)
    return _page(request, "board/_diff_file.html", context)


@role_required
@require_GET
def rig_diff_file(request: HttpRequest, pk: int) -> HttpResponse:
    return _diff_file(request, "rig", pk)


@role_required
@require_GET
def merge_request_diff_file(request: HttpRequest, pk: int) -> HttpResponse:
    return _diff_file(request, "merge_request", pk)


@operator_required
@require_POST
def review_comment_add(request: HttpRequest, pk: int) -> HttpResponse:
    """A comment on a line of the rig's change (or on the whole change), through the one
    service: the rig's agent gets it in its inbox."""
    rig = get_object_or_404(Rig.objects.select_related("repository"), pk=pk)
    form = forms.ReviewCommentForm(request.POST, rig=rig)

    def action() -> str:
        if not form.is_valid():
            raise ValidationError(form.errors.as_data())
        data = form.cleaned_data
        comment = review_services.review_comment_add(
            rig=rig,
            by=request.user.get_username(),
            text=data["text"],
            path=data["path"],
            line=data["line"],
            side=data["side"] or "new",
            commit=data["commit"],
            base_commit=data["base_commit"],
            excerpt=data["excerpt"],
            merge_request=data["merge_request"],
        )
        return f"Comment #{comment.id} on {comment.where} sent to rig {rig.slug}'s inbox."

    return _act(request, action, default_next=reverse("board:rig-diff", args=[pk]))


def _review_comment(pk: int) -> ReviewComment:
    return get_object_or_404(ReviewComment.objects.select_related("rig", "reply_to"), pk=pk)


@operator_required
@require_POST
def review_comment_reply(request: HttpRequest, pk: int) -> HttpResponse:
    comment = _review_comment(pk)
    form = forms.AnswerForm(request.POST)

    def action() -> str:
        if not form.is_valid():
            raise ValidationError(form.errors.as_data())
        review_services.review_comment_reply(
            comment=comment, text=form.cleaned_data["answer"], by=request.user.get_username()
        )
        return f"Answered review comment #{comment.reply_to_id or comment.id}."

    return _act(request, action, default_next=reverse("board:rig-diff", args=[comment.rig_id]))


@operator_required
@require_POST
def review_comment_resolve(request: HttpRequest, pk: int) -> HttpResponse:
    comment = _review_comment(pk)

    def action() -> str:
        review_services.review_comment_resolve(comment=comment, by=request.user.get_username())
        return f"Review comment #{comment.reply_to_id or comment.id} resolved."

    return _act(request, action, default_next=reverse("board:rig-diff", args=[comment.rig_id]))


def _review(request: HttpRequest, pk: int, verdict: str) -> HttpResponse:
    qs = MergeRequest.objects.select_related("rig", "repository")
    mr = get_object_or_404(qs, pk=pk)

    def action() -> str:
        approval = review_services.merge_request_review(
            merge_request=mr,
            verdict=verdict,
            by=request.user.get_username(),
            commit=request.POST.get("commit", ""),
            note=request.POST.get("note", ""),
        )
        mr.refresh_from_db()
        if verdict == MergeApproval.Verdict.CHANGES_REQUESTED:
            return f"Changes requested: merge request #{mr.id} is cancelled; the agent is told."
        if mr.state == MergeRequest.State.QUEUED:
            return f"Approved {approval.commit[:10]}: merge request #{mr.id} is queued for gating."
        return f"Approved {approval.commit[:10]}: merge request #{mr.id} needs more approvals."

    return _act(request, action, default_next=reverse("board:mr-diff", args=[pk]))


@operator_required
@require_POST
def merge_request_approve(request: HttpRequest, pk: int) -> HttpResponse:
    """Approve the commit the diff showed; enough approvals queue it for gating."""
    return _review(request, pk, MergeApproval.Verdict.APPROVED)


@operator_required
@require_POST
def merge_request_request_changes(request: HttpRequest, pk: int) -> HttpResponse:
    """Ask for changes: the request is cancelled and the agent told (with the open comments)."""
    return _review(request, pk, MergeApproval.Verdict.CHANGES_REQUESTED)
