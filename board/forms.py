"""The board's forms: what a page reads from its query string or a POST, checked field by field.

Ids and numbers arriving as text are read by the one parser (`common.params`): '²', thousands
of digits or a number past 2^63 is an error naming its field (a 400 page or a message beside the
field), never a 500. The domain's own rules (a title, a known agent, no dependency cycle) stay
in the services; their errors are shown beside the field they name.
"""

from decimal import Decimal, InvalidOperation
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from board.pages import BoardFilters
from common.params import parse_id
from rigs.models import Repository

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
    """Dollars: empty for none; `25`, `12.50`, `$1,000` are accepted."""

    def to_python(self, value: Any) -> Decimal | None:
        raw = str(value or "")
        text = raw.strip().removeprefix("$").replace(",", "").strip()
        if not text:
            return None
        try:
            amount = Decimal(text)
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


# --- a new convoy ------------------------------------------------------------------------------

LEG_ROWS = 5  # blank rows on a fresh form ("Add a leg" clones one)
MAX_LEG_ROWS = 200


class ConvoyForm(forms.Form):
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
    """One leg row: key, title, `agent:<name>` or `rig:<id>`, the keys it depends on."""

    key = forms.CharField(required=False)
    title = forms.CharField(required=False)
    assignee = forms.CharField(required=False)
    depends_on = forms.CharField(required=False)

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
            **data["assignee"],
        }


_LegFormSet = forms.formset_factory(
    LegForm, extra=LEG_ROWS, max_num=MAX_LEG_ROWS, absolute_max=MAX_LEG_ROWS, validate_max=True
)


def leg_formset(post=None):
    """The leg rows. The page posts each column as a repeated field (`leg_key`, `leg_title`,
    `leg_assignee`, `leg_depends_on`: one value per row, so "Add a leg" only clones a row);
    they are laid out here as the formset's numbered fields. Blank rows are skipped."""
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
