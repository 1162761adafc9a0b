"""The board's forms: what a page reads from its query string or a POST, checked field by field.

Ids and numbers arriving as text are read by the one parser (`common.params`): '²', thousands
of digits or a number past 2^63 is an error naming its field (a 400 page or a message beside the
field), never a 500. The domain's own rules (a title, a known agent, no dependency cycle) stay
in the services; their errors are shown beside the field they name.
"""

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from board.pages import BoardFilters, FeedFilters
from common.forms import AsciiNumbers
from common.params import MAX_ID, parse_id
from notifications.models import Notification
from rigs.models import MergeRequest, Repository
from rigs.services import repository_name_from_path
from runner.models import Budget

# --- fields ------------------------------------------------------------------------------------


def _as_id(value: Any) -> int:
    """`common.params.parse_id`, its message raised for the field being cleaned."""
    try:
        return parse_id(value, "value")
    except ValidationError as exc:
        raise ValidationError(exc.messages, code="invalid_id") from None


class IdField(forms.Field):
    """An id as text (a query string's `repository=3`): empty is None."""

    def to_python(self, value: Any) -> int | None:
        if value in self.empty_values:
            return None
        return _as_id(value)


class IdChoiceField(forms.ModelChoiceField):
    """A ModelChoiceField whose posted id is read by `common.params` before any query."""

    def to_python(self, value: Any):
        if value in self.empty_values:
            return None
        return super().to_python(_as_id(value))


BUDGET_MAX = Decimal("99999999.99")  # Convoy.budget_usd: 10 digits, 2 of them cents


class BudgetField(forms.Field):
    """Dollars: empty for none; `25`, `12.50`, `$1,000` are accepted (not `1e3`, not digits
    other than 0-9)."""

    numeric = True  # (common.forms.AsciiNumbers checks its digits)

    def to_python(self, value: Any) -> Decimal | None:
        raw = str(value or "")
        text = raw.strip().removeprefix("$").replace(",", "").strip()
        if not text:
            return None
        try:
            amount = Decimal(text) if re.fullmatch(r"-?[0-9]*\.?[0-9]*", text) else None
        except InvalidOperation:
            amount = None
        if amount is None or not amount.is_finite():
            raise ValidationError(
                f"enter an amount in dollars, e.g. 25 or 12.50 (not '{raw.strip()[:30]}')."
            )
        if amount < 0:
            raise ValidationError("a budget cannot be negative.")
        if amount > BUDGET_MAX:
            raise ValidationError("at most $99,999,999.99.")
        if amount != amount.quantize(Decimal("0.01")):
            raise ValidationError("at most two decimal places (whole cents).")
        return amount


# --- the board's filters -----------------------------------------------------------------------


class BoardFilterForm(forms.Form):
    """The board's query string: `?repository=<id>&agent=<name>&q=<text>&cancelled=1`."""

    repository = IdField(required=False)
    agent = forms.CharField(required=False)
    q = forms.CharField(required=False)
    cancelled = forms.CharField(required=False)

    def filters(self) -> BoardFilters:
        """The filters, once `is_valid()`: long text is cut, not refused (it only filters)."""
        data = self.cleaned_data
        return BoardFilters(
            repository=data["repository"],
            agent=data["agent"][:63],
            q=data["q"][:200],
            cancelled=data["cancelled"] in ("1", "on", "true"),
        )


class FeedFilterForm(forms.Form):
    """The convoy page's cascade feed: `?feed_rig=<slug>&feed_kind=<kind>&feed_page=<n>`. A
    kind that is not a notification kind or a page that is not a number is refused here (400);
    a rig that does not work the convoy is refused by `board.pages.convoy_feed`, which knows the
    convoy's rigs. A page past the last shows the last."""

    feed_rig = forms.CharField(required=False, max_length=63)
    feed_kind = forms.ChoiceField(
        required=False,
        choices=[("", "all kinds"), *Notification.Kind.choices],
        error_messages={"invalid_choice": "'%(value)s' is not a kind of notification."},
    )
    feed_page = IdField(required=False)

    def filters(self) -> FeedFilters:
        data = self.cleaned_data
        return FeedFilters(
            rig=data["feed_rig"], kind=data["feed_kind"], page=data["feed_page"] or 1
        )


# --- a rig's merge request ---------------------------------------------------------------------


class RigMergeForm(forms.Form):
    """The rig page's "Request merge": `force` asks to land it although its leg has open or
    in-progress beads or its worktree uncommitted changes (recorded on the merge request)."""

    force = forms.CharField(required=False, max_length=10)

    def clean_force(self) -> bool:
        """A checkbox: "on" (or true/1), or absent; anything else names the field."""
        value = (self.cleaned_data.get("force") or "").strip().lower()
        if value in ("", "false", "0", "off"):
            return False
        if value in ("on", "true", "1"):
            return True
        raise forms.ValidationError(f"'{value[:10]}' is not a checkbox value (on, or none).")


# --- a new convoy ------------------------------------------------------------------------------

LEG_ROWS = 5  # blank rows on a fresh form ("Add a leg" clones one)
MAX_LEG_ROWS = 200


class ConvoyForm(AsciiNumbers, forms.Form):
    """The convoy's own fields. The title is checked by `convoy_create` (one place for it)."""

    title = forms.CharField(required=False)
    repository = IdChoiceField(
        queryset=Repository.objects.all(),
        error_messages={
            "required": "choose a repository.",
            "invalid_choice": "no such repository; choose one.",
        },
    )
    target_branch = forms.CharField(required=False)
    budget_usd = BudgetField(required=False)
    use_integration_branch = forms.BooleanField(required=False)


class LegForm(forms.Form):
    """One leg row: key, title, `agent:<name>` or `rig:<id>`, the keys it depends on, its
    description and its acceptance checklist (one item a line)."""

    key = forms.CharField(required=False)
    title = forms.CharField(required=False)
    assignee = forms.CharField(required=False)
    depends_on = forms.CharField(required=False)
    description = forms.CharField(required=False)
    acceptance = forms.CharField(required=False)

    def clean_assignee(self) -> dict[str, Any]:
        """`{"rig": <id>}`, `{"agent": <name>}` or `{}` (the service says a leg needs one)."""
        value = self.cleaned_data["assignee"]
        if not value:
            return {}
        kind, _, ident = value.partition(":")
        if kind == "rig":
            return {"rig": _as_id(ident)}
        if kind == "agent" and ident.strip():
            return {"agent": ident.strip()}
        raise ValidationError(f"'{value[:40]}' is neither agent:<name> nor rig:<id>.")

    def leg(self) -> dict[str, Any]:
        """The row as `convoy_create` takes a leg."""
        data = self.cleaned_data
        return {
            "key": data["key"],
            "title": data["title"],
            "depends_on": [d.strip() for d in data["depends_on"].split(",") if d.strip()],
            "description": data["description"],
            "acceptance": [a.strip() for a in data["acceptance"].splitlines() if a.strip()],
            **data["assignee"],
        }


_LegFormSet = forms.formset_factory(
    LegForm, extra=LEG_ROWS, max_num=MAX_LEG_ROWS, absolute_max=MAX_LEG_ROWS, validate_max=True
)


def leg_formset(post=None):
    """The leg rows. The page posts each column as a repeated field (`leg_key`, `leg_title`,
    `leg_assignee`, `leg_depends_on`, `leg_description`, `leg_acceptance`: one value per row,
    so "Add a leg" only clones a row); they are laid out here as the formset's numbered fields.
    Blank rows are skipped."""
    if post is None:
        return _LegFormSet(prefix="legs")
    columns = {name: post.getlist(f"leg_{name}") for name in LegForm.base_fields}
    count = min(max(map(len, columns.values())), MAX_LEG_ROWS + 1)
    data = {"legs-TOTAL_FORMS": str(count), "legs-INITIAL_FORMS": "0"}
    for name, values in columns.items():
        for n, value in enumerate(values[:count]):
            data[f"legs-{n}-{name}"] = value
    return _LegFormSet(data, prefix="legs")


class NewConvoyForm:
    """The new-convoy page: the convoy's fields and its leg rows, checked together; the errors
    of `convoy_create` (`legs[1].depends_on`) are then shown on the row they name."""

    def __init__(self, data=None) -> None:
        self.form = ConvoyForm(data)
        self.legs = leg_formset(data)
        self.general: dict[str, str] = {}  # errors of no field on the page (e.g. "legs")

    @property
    def filled(self) -> list[LegForm]:
        return [form for form in self.legs.forms if form.has_changed()]

    def is_valid(self) -> bool:
        valid = self.form.is_valid()
        valid = self.legs.is_valid() and valid
        if self.legs.is_bound and not self.legs.non_form_errors() and not self.filled:
            self.general["legs"] = "add at least one leg."
        if self.legs.non_form_errors():
            self.general["legs"] = " ".join(self.legs.non_form_errors())
        return valid and not self.general

    def convoy_input(self) -> dict[str, Any]:
        """`convoy_create`'s keyword arguments (once valid)."""
        return {**self.form.cleaned_data, "legs": [form.leg() for form in self.filled]}

    def add_service_errors(self, exc: ValidationError) -> None:
        """Spread a ValidationError of `convoy_create` over the fields it names."""
        rows = {f"legs[{n}]": form for n, form in enumerate(self.filled)}
        for name, messages in exc.message_dict.items():
            text = " ".join(messages)
            head, bracket, rest = name.partition("]")
            row = rows.get(head + bracket)
            if row is not None:
                field = rest.lstrip(".")
                field = "assignee" if field in ("rig", "agent") else field
                row.add_error(field if field in row.fields else "key", text)
            elif name in self.form.fields:
                self.form.add_error(name, text)
            else:
                self.general[name] = text

    @property
    def errors(self) -> dict[str, str]:
        """The convoy's errors by field, one line each (the page lists them at the top)."""
        return {
            **{name: " ".join(msgs) for name, msgs in self.form.errors.items()},
            **self.general,
        }

    @property
    def leg_errors(self) -> bool:
        return any(form.errors for form in self.legs.forms)


# --- a convoy from a Markdown plan ---------------------------------------------------------------


class PlanImportForm(forms.Form):
    """The New convoy page's import: a repository, and the plan as an uploaded file or pasted
    text (the file wins when both are given); launched too if asked. The plan itself is read
    and checked by `convoy_import`, which lists every error with its line."""

    repository = IdChoiceField(
        queryset=Repository.objects.all(),
        error_messages={
            "required": "choose a repository.",
            "invalid_choice": "no such repository; choose one.",
        },
    )
    plan = forms.CharField(required=False, strip=False)
    plan_file = forms.FileField(required=False)
    launch = forms.BooleanField(required=False)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        upload = data.get("plan_file")
        if upload:
            raw = upload.read(settings.GASTOWN_MAX_BODY_BYTES + 1)
            if len(raw) > settings.GASTOWN_MAX_BODY_BYTES:
                self.add_error("plan_file", "the file is larger than the request limit.")
            else:
                try:
                    data["plan"] = raw.decode("utf-8-sig")
                except UnicodeDecodeError:
                    self.add_error("plan_file", "the file is not UTF-8 text (a Markdown plan).")
        elif not (data.get("plan") or "").strip():
            self.add_error("plan", "upload a plan file, or paste the plan's Markdown.")
        return data


# --- a repository (admins) ---------------------------------------------------------------------


class AddRepositoryForm(forms.Form):
    """The repositories page's "Add repository" (admins only): what `repository_register` takes,
    as `manage.py add_repository` does. Its rules (inside GASTOWN_REPOSITORY_ROOTS, a git
    repository with the target branch, a free slug) are the service's; their errors are shown
    beside the field they name. The gate and setup commands are commands the server runs: the
    form has them only for an admin."""

    COMMAND_FIELDS = ("gate_command", "setup_command")

    path = forms.CharField(max_length=4096, error_messages={"required": "give the path."})
    name = forms.CharField(required=False, max_length=63)
    target_branch = forms.CharField(required=False, max_length=200)
    gate_command = forms.CharField(required=False, max_length=4096)
    setup_command = forms.CharField(required=False, max_length=4096)

    def __init__(self, *args: Any, admin: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not admin:
            for name in self.COMMAND_FIELDS:
                del self.fields[name]

    def register_input(self) -> dict[str, Any]:
        """`repository_register`'s keyword arguments (once valid); an empty name is made from
        the folder's, an empty target is `main`."""
        data = self.cleaned_data
        return {
            "path": data["path"],
            "name": data["name"] or repository_name_from_path(data["path"]),
            "target_branch": data["target_branch"] or "main",
            **{name: data[name] for name in self.COMMAND_FIELDS if name in self.fields},
        }

    def add_service_errors(self, exc: ValidationError) -> None:
        """Spread the service's ValidationError over the fields it names (the rest on top)."""
        for name, messages in exc.message_dict.items():
            self.add_error(name if name in self.fields else None, " ".join(messages))


class AnswerForm(forms.Form):
    """An operator's answer to an escalation or an ended turn (the rig page, Escalations)."""

    answer = forms.CharField(max_length=4000, strip=True, widget=forms.Textarea(attrs={"rows": 2}))


# --- budgets -----------------------------------------------------------------------------------


class BudgetSetForm(AsciiNumbers, forms.Form):
    """The Budgets page's "Set a limit": a target (`agent:3`, `repository:1`, `convoy:5`), a
    window, dollars and/or tokens, a cap on runs at once. A target's budget for that window is
    changed when it has one, else made (`runner.budgets.budget_save`)."""

    target = forms.ChoiceField(error_messages={"required": "choose what the limit is on."})
    window = forms.ChoiceField(choices=Budget.Window.choices, initial=Budget.Window.DAY)
    limit_usd = BudgetField(required=False)
    limit_tokens = forms.IntegerField(required=False, min_value=0, max_value=MAX_ID)
    max_agents = forms.IntegerField(required=False, min_value=1, max_value=32767)

    def __init__(self, *args: Any, targets: list[tuple[str, list[tuple[str, str]]]], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["target"].choices = [("", "choose…"), *targets]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        none = data.get("limit_usd") is None and data.get("limit_tokens") is None
        if none and not self.has_error("limit_usd") and not self.has_error("limit_tokens"):
            self.add_error("limit_usd", "set a limit in dollars, in tokens, or both.")
        return data

    def budget(self) -> Budget:
        """The budget to save (once valid): the target's for that window, or a new one."""
        data = self.cleaned_data
        scope, _, pk = data["target"].partition(":")
        field = {"agent": "agent_id", "repository": "repository_id", "convoy": "convoy_id"}[scope]
        target = {field: int(pk)}
        budget = Budget.objects.filter(**target, window=data["window"]).first()
        budget = budget or Budget(scope=scope, window=data["window"], **target)
        budget.limit_usd = data["limit_usd"]
        budget.limit_tokens = data["limit_tokens"]
        budget.max_agents = data["max_agents"]
        return budget

    def add_service_errors(self, exc: ValidationError) -> None:
        for name, messages in exc.message_dict.items():
            self.add_error(name if name in self.fields else None, " ".join(messages))


# --- review: the diff view ---------------------------------------------------------------------


class DiffFileForm(forms.Form):
    """Which file of a change to show (`?path=`), how (`view=unified|split`), and a large one
    in full (`full=1`)."""

    path = forms.CharField(max_length=1024, strip=False)
    view = forms.ChoiceField(choices=[("unified", "unified"), ("split", "split")], required=False)
    full = forms.BooleanField(required=False)


class ReviewCommentForm(AsciiNumbers, forms.Form):
    """A comment on a line of a rig's change (or on the whole change: no path). The service
    checks the rest (a line needs a path, a path needs the commit)."""

    text = forms.CharField(max_length=4000, strip=True, widget=forms.Textarea(attrs={"rows": 3}))
    path = forms.CharField(max_length=1024, required=False, strip=False)
    line = forms.IntegerField(min_value=1, max_value=10_000_000, required=False)
    side = forms.ChoiceField(choices=[("new", "new"), ("old", "old")], required=False)
    commit = forms.RegexField(r"^[0-9a-f]{40}$", required=False)
    base_commit = forms.RegexField(r"^[0-9a-f]{40}$", required=False)
    excerpt = forms.CharField(max_length=2000, required=False, strip=False)
    merge_request = forms.IntegerField(min_value=1, max_value=MAX_ID, required=False)

    def __init__(self, *args: Any, rig=None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rig = rig

    def clean_merge_request(self):
        pk = self.cleaned_data.get("merge_request")
        if pk is None:
            return None
        mr = MergeRequest.objects.filter(pk=pk, rig=self.rig).first()
        if mr is None:
            raise ValidationError(f"merge request #{pk} is not one of this rig's.")
        return mr
