"""The API's content negotiation (its own module: DRF reads it while `rest_framework.views`
is being imported, before `common.api` could be)."""

from rest_framework import exceptions
from rest_framework.exceptions import ErrorDetail
from rest_framework.negotiation import DefaultContentNegotiation


class ContentNegotiation(DefaultContentNegotiation):
    """`?format=bogus` is a 400 naming the formats (DRF's own answer is a bare 404)."""

    def filter_renderers(self, renderers, format):
        formats = [renderer.format for renderer in renderers]
        if format not in formats:
            raise exceptions.ValidationError(
                {"format": [ErrorDetail(f"one of: {', '.join(formats)}.", code="invalid_choice")]}
            )
        return super().filter_renderers(renderers, format)
