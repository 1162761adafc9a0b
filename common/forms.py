"""What the board's and the admin's forms share."""

from django import forms

from common.params import foreign_digits


class AsciiNumbers:
    """A form mixin: a number field given digits other than 0-9 is an error on that field,
    as in the API and the query strings (docs/security.md, "Requests")."""

    number_fields = (forms.IntegerField, forms.FloatField)  # (DecimalField is an IntegerField)

    def full_clean(self) -> None:
        super().full_clean()
        if not self.is_bound:
            return
        for name, field in self.fields.items():
            raw = self.data.get(self.add_prefix(name))
            numeric = isinstance(field, self.number_fields) or getattr(field, "numeric", False)
            foreign = numeric and isinstance(raw, str) and foreign_digits(raw)
            if foreign and (name in self.cleaned_data or not self.has_error(name)):
                self.add_error(name, "digits in ASCII only (0-9).")
