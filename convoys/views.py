"""Pages of the board and the small views behind their controls.

Thin: `convoys.board` reads, the services write. Every write is a POST with CSRF from an
operator (`rigs.permissions.is_operator`, else 403). A request that asks for JSON (the page's
scripts do) gets `{"ok": true, "message": ...}` or `{"error": {"message": ...}}` with a 4xx;
a plain form post is redirected back with the message shown on the page.
"""

from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from common.errors import Refusal, error_text
from convoys import board, services
from convoys.models import Convoy, Notification
from rigs import services as rig_services
from rigs.models import Agent, Repository, Rig
from rigs.permissions import is_operator
from runner import services as run_services
from runner.models import AgentRun

S = Convoy.State


class Refused(Refusal):
    """A move the board itself refuses (e.g. dragging into a derived column)."""


def _page(
    request: HttpRequest, template: str, context: dict[str, Any], status: int = 200
) -> HttpResponse:
    context.setdefault("can_operate", is_operator(request.user))
    return render(request, template, context, status=status)


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _back(request: HttpRequest, default: str) -> str:
    target = request.POST.get("next") or request.headers.get("Referer") or default
    if url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        return target
    return default


def _act(
    request: HttpRequest,
    action: Callable[[], str],
    *,
    default_next: str,
    refused_extra: Callable[[], dict[str, Any]] | None = None,
) -> HttpResponse:
    """Run one operator action and answer the way the caller asked (JSON or redirect)."""
    if not is_operator(request.user):
        if _wants_json(request):
            return JsonResponse({"error": {"message": "Only operators may do this."}}, status=403)
        raise PermissionDenied("Only operators may do this.")
    try:
        message = action()
    except (ValidationError, Refusal) as exc:
        status = 400 if isinstance(exc, ValidationError) else exc.status
        text = error_text(exc)
        if _wants_json(request):
            extra = refused_extra() if refused_extra else {}
            return JsonResponse({"error": {"message": text}, **extra}, status=status)
        messages.error(request, text)
        return redirect(_back(request, default_next))
    if _wants_json(request):
        return JsonResponse({"ok": True, "message": message})
    messages.success(request, message)
    return redirect(_back(request, default_next))


# --- pages -------------------------------------------------------------------------------------


@login_required
@require_GET
def board_view(request: HttpRequest) -> HttpResponse:
    filters = board.BoardFilters.from_query(request.GET)
    return _page(request, "board/board.html", {**board.board_page(filters), "nav": "board"})


@login_required
@require_GET
def board_columns(request: HttpRequest) -> HttpResponse:
    """The columns alone: the filters and a burst of live updates swap these in."""
    filters = board.BoardFilters.from_query(request.GET)
    return _page(request, "board/_columns.html", board.board_page(filters))


@login_required
@require_GET
def board_card(request: HttpRequest, pk: int) -> HttpResponse:
    """One card, for a live update; 204 when the page's filters hide it (or it is gone)."""
    card = board.board_card(pk, board.BoardFilters.from_query(request.GET))
    if card is None:
        return HttpResponse(status=204)
    return _page(request, "board/_card.html", {"card": card})


@login_required
@require_GET
def convoy_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return _page(request, "board/convoy.html", board.convoy_page(pk))


@login_required
@require_GET
def convoy_live(request: HttpRequest, pk: int) -> HttpResponse:
    return _page(request, "board/_convoy_live.html", board.convoy_page(pk))


@login_required
@require_GET
def rig_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return _page(request, "board/rig.html", board.rig_page(pk))


@login_required
@require_GET
def rig_live(request: HttpRequest, pk: int) -> HttpResponse:
    return _page(request, "board/_rig_live.html", board.rig_page(pk))


@login_required
@require_GET
def repository_list(request: HttpRequest) -> HttpResponse:
    return _page(request, "board/repositories.html", {**board.repositories_page(), "nav": "queues"})


@login_required
@require_GET
def merge_queue(request: HttpRequest, pk: int) -> HttpResponse:
    return _page(request, "board/queue.html", {**board.merge_queue_page(pk), "nav": "queues"})


@login_required
@require_GET
def merge_queue_live(request: HttpRequest, pk: int) -> HttpResponse:
    return _page(request, "board/_queue_live.html", board.merge_queue_page(pk))


# --- convoys: create, move, launch, cancel -----------------------------------------------------

LEG_ROWS = 5


def _leg_rows(post) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The form's leg rows as entered (for re-display) and as `convoy_create` takes them.
    `assignee` is `agent:<name>` or `rig:<id>`; empty rows are skipped."""
    keys = post.getlist("leg_key")
    titles = post.getlist("leg_title")
    assignees = post.getlist("leg_assignee")
    depends = post.getlist("leg_depends_on")
    rows, legs = [], []
    for n in range(max(len(keys), len(titles), len(assignees), len(depends))):

        def pick(values: list[str], n: int = n) -> str:
            return values[n].strip() if n < len(values) else ""

        row = {
            "key": pick(keys),
            "title": pick(titles),
            "assignee": pick(assignees),
            "depends_on": pick(depends),
            "errors": {},
        }
        rows.append(row)
        if not any(row[k] for k in ("key", "title", "assignee", "depends_on")):
            continue
        row["index"] = len(legs)
        leg: dict[str, Any] = {
            "key": row["key"],
            "title": row["title"],
            "depends_on": [d.strip() for d in row["depends_on"].split(",") if d.strip()],
        }
        kind, _, value = row["assignee"].partition(":")
        if kind == "rig":
            leg["rig"] = value
        elif kind == "agent":
            leg["agent"] = value
        legs.append(leg)
    return rows, legs


def _assignee_choices() -> list[tuple[str, list[tuple[str, str]]]]:
    agents = Agent.objects.filter(is_active=True).order_by("name")
    rigs = (
        Rig.objects.filter(state__in=Rig.LIVE_STATES)
        .select_related("repository")
        .order_by("repository__name", "slug")
    )
    return [
        ("Agent (a rig is provisioned at launch)", [(f"agent:{a.name}", a.name) for a in agents]),
        (
            "Existing rig",
            [(f"rig:{r.id}", f"{r.repository.name}/{r.slug} ({r.state})") for r in rigs],
        ),
    ]


BUDGET_MAX = Decimal("99999999.99")  # Convoy.budget_usd: 10 digits, 2 of them cents


def _parse_budget(raw: str) -> Decimal | None:
    """The form's budget in dollars: empty for none; `25`, `12.50`, `$1,000` are accepted."""
    text = raw.strip().removeprefix("$").replace(",", "").strip()
    if not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite():
        raise ValidationError(
            {"budget_usd": f"enter an amount in dollars, e.g. 25 or 12.50 (not '{raw[:30]}')."}
        )
    if value < 0:
        raise ValidationError({"budget_usd": "a budget cannot be negative."})
    if value > BUDGET_MAX:
        raise ValidationError({"budget_usd": "at most $99,999,999.99."})
    if value != value.quantize(Decimal("0.01")):
        raise ValidationError({"budget_usd": "at most two decimal places (whole cents)."})
    return value


def _assign_errors(exc: ValidationError, rows: list[dict[str, Any]]) -> dict[str, str]:
    """Spread `convoy_create`'s errors (`legs[1].depends_on`) over the form's fields."""
    by_index = {row["index"]: row for row in rows if "index" in row}
    general: dict[str, str] = {}
    for name, msgs in exc.message_dict.items():
        text = " ".join(msgs)
        if name.startswith("legs[") and "]" in name:
            index, _, leg_field = name[5:].partition("]")
            row = by_index.get(int(index)) if index.isdigit() else None
            if row is not None:
                leg_field = leg_field.lstrip(".") or "key"
                leg_field = "assignee" if leg_field in ("rig", "agent") else leg_field
                row["errors"][leg_field] = text
                continue
        general[name] = text
    return general


@login_required
def convoy_new(request: HttpRequest) -> HttpResponse:
    if not is_operator(request.user):
        raise PermissionDenied("Only operators may create convoys.")
    errors: dict[str, str] = {}
    values = {
        "title": "",
        "repository": "",
        "target_branch": "",
        "budget_usd": "",
        "integration": False,
    }
    rows = [
        {"key": "", "title": "", "assignee": "", "depends_on": "", "errors": {}}
        for _ in range(LEG_ROWS)
    ]
    if request.method == "POST":
        values = {
            "title": request.POST.get("title", "").strip(),
            "repository": request.POST.get("repository", ""),
            "target_branch": request.POST.get("target_branch", "").strip(),
            "budget_usd": request.POST.get("budget_usd", "").strip()[:40],
            "integration": bool(request.POST.get("use_integration_branch")),
        }
        rows, legs = _leg_rows(request.POST)
        repository = Repository.objects.filter(
            pk=values["repository"] if values["repository"].isdigit() else None
        ).first()
        try:
            if repository is None:
                raise ValidationError({"repository": "choose a repository."})
            budget = _parse_budget(values["budget_usd"])
            if not legs:
                raise ValidationError({"legs": "add at least one leg."})
            convoy = services.convoy_create(
                title=values["title"],
                repository=repository,
                target_branch=values["target_branch"],
                legs=legs,
                use_integration_branch=values["integration"],
                budget_usd=budget,
                created_by=request.user,
            )
        except ValidationError as exc:
            errors = _assign_errors(exc, rows)
        else:
            messages.success(request, f"Convoy '{convoy.title}' created as a draft.")
            return redirect("board:convoy-detail", pk=convoy.pk)
    leg_errors = any(row["errors"] for row in rows)
    return _page(
        request,
        "board/convoy_new.html",
        {
            "values": values,
            "rows": rows,
            "errors": errors,
            "leg_errors": leg_errors,
            "repositories": Repository.objects.order_by("name"),
            "assignee_groups": _assignee_choices(),
            "nav": "new",
        },
        status=400 if errors or leg_errors else 200,
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
    if to in board.DERIVED_COLUMNS:
        raise Refused(board.DERIVED_COLUMNS[to])
    if to == S.DRAFT:
        raise Refused("a convoy cannot go back to draft")
    raise Refused(f"unknown column '{to}'")


@login_required
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


@login_required
@require_POST
def convoy_launch(request: HttpRequest, pk: int) -> HttpResponse:
    convoy = get_object_or_404(Convoy, pk=pk)

    def action() -> str:
        services.convoy_launch(convoy=convoy)
        return f"'{convoy.title}' launched."

    return _act(request, action, default_next=reverse("board:convoy-detail", args=[pk]))


@login_required
@require_POST
def convoy_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    convoy = get_object_or_404(Convoy, pk=pk)
    reason = f"cancelled by {request.user.get_username()}"
    return _act(
        request,
        lambda: _move(convoy, S.CANCELLED, reason),
        default_next=reverse("board:convoy-detail", args=[pk]),
    )


@login_required
@require_POST
def convoy_landing_retry(request: HttpRequest, pk: int) -> HttpResponse:
    convoy = get_object_or_404(Convoy, pk=pk)

    def action() -> str:
        services.convoy_landing_retry(convoy=convoy)
        return f"Landing of '{convoy.title}' queued again."

    return _act(request, action, default_next=reverse("board:convoy-detail", args=[pk]))


# --- rigs: request merge, retry, sync, teardown; notifications: ack ----------------------------


@login_required
@require_POST
def rig_merge(request: HttpRequest, pk: int) -> HttpResponse:
    rig = get_object_or_404(Rig.objects.select_related("repository"), pk=pk)

    def action() -> str:
        mr = services.rig_merge_request(rig=rig, requested_by=request.user.get_username())
        return f"Merge request #{mr.id} queued: {rig.branch} → {mr.target_branch}."

    return _act(request, action, default_next=reverse("board:rig-detail", args=[pk]))


@login_required
@require_POST
def rig_retry(request: HttpRequest, pk: int) -> HttpResponse:
    rig = get_object_or_404(Rig, pk=pk)

    def action() -> str:
        rig_services.rig_retry(rig=rig)
        return f"Rig {rig.slug} is being provisioned again."

    return _act(request, action, default_next=reverse("board:rig-detail", args=[pk]))


@login_required
@require_POST
def rig_sync(request: HttpRequest, pk: int) -> HttpResponse:
    rig = get_object_or_404(Rig, pk=pk)

    def action() -> str:
        rig_services.rig_sync_request(rig=rig)
        return f"Rig {rig.slug} will be synced with its branch on disk."

    return _act(request, action, default_next=reverse("board:rig-detail", args=[pk]))


@login_required
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


@login_required
@require_POST
def rig_launch(request: HttpRequest, pk: int) -> HttpResponse:
    """Launch the rig's agent (its runtime command in the rig's worktree) as a new run."""
    rig = get_object_or_404(Rig.objects.select_related("agent", "repository"), pk=pk)

    def action() -> str:
        who = request.user.get_username()
        run = run_services.agent_run_request(
            rig=rig, requested_by=who, reason=f"launched by {who} from the board"
        )
        return (
            f"Agent {run.agent.name} launched in rig {rig.slug} as run #{run.id}: it starts "
            "as soon as the rig is ready and an agent slot is free."
        )

    return _act(request, action, default_next=reverse("board:rig-detail", args=[pk]))


@login_required
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


@login_required
@require_POST
def notification_ack(request: HttpRequest, pk: int) -> HttpResponse:
    notification = get_object_or_404(Notification, pk=pk)

    def action() -> str:
        services.notification_ack(notification=notification)
        return "Notification acknowledged."

    return _act(
        request, action, default_next=reverse("board:rig-detail", args=[notification.rig_id])
    )


def healthz(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok", "database": connection.vendor})
