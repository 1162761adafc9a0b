"""The OpenAPI schema's conventions (drf-spectacular): one tag per resource, and the error body
with examples on every operation. Apart from common/api.py: DRF's settings import that module
while DRF's generic views are still loading, and drf-spectacular imports them."""

from drf_spectacular import openapi

from common.errors import error_body

API_PREFIX = "/api/v1/"


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's schema, with operations grouped by resource: the first segment of the
    path under /api/v1/ (`rigs/{id}/heartbeat/` is under `rigs`). A view that makes another
    resource's object says so (`extend_schema(tags=["runs"])` on `rigs/{id}/runs/`). The tags
    and their descriptions are SPECTACULAR_SETTINGS["TAGS"]."""

    def get_tags(self) -> list[str]:
        rest = self.path.removeprefix(API_PREFIX)
        return [rest.split("/")[0]] if rest != self.path else super().get_tags()


_ITEM_SCHEMA = {
    "type": "object",
    "properties": {
        "field": {"type": "string", "nullable": True, "description": "`title`, `legs[1].rig`"},
        "code": {"type": "string"},
        "message": {"type": "string"},
        "line": {"type": "integer", "description": "an invalid plan's errors: the plan's line"},
    },
    "required": ["field", "code", "message"],
}

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "description": "machine-readable, e.g. `not_found`"},
                "message": {"type": "string", "description": "for people: what and why"},
                "field": {
                    "type": "string",
                    "nullable": True,
                    "description": "the input field the error is about (`legs[1].rig`)",
                },
                "errors": {
                    "type": "array",
                    "items": _ITEM_SCHEMA,
                    "description": "every problem, the first included (`code`, `message` and "
                    "`field` are the first's): bad input names all its fields at once",
                },
            },
            "required": ["code", "message", "field", "errors"],
        }
    },
    "required": ["error"],
}

_ERRORS = {
    "400": "Bad input: the field and the rule are named; `errors` lists every problem.",
    "401": "No credentials, or an invalid, revoked or expired token.",
    "403": "Authenticated, but not allowed (wrong agent, or a role that may not do this).",
    "404": "No such object.",
    "409": "Conflicts with the current state (already claimed, illegal transition, cycle...).",
    "415": "The body is not JSON (or form data).",
    "429": "Too many requests for this token; retry after `Retry-After` seconds.",
}


def _example(summary: str, *errors: tuple[str | None, str, str]) -> dict:
    items = [{"field": field, "code": code, "message": message} for field, code, message in errors]
    return {"summary": summary, "value": error_body(items[0]["code"], items[0]["message"],
                                                    items[0]["field"], items)}  # fmt: skip


_BAD_FIELDS = _example(
    "three bad fields in a body",
    ("title", "blank", "title: This field may not be blank."),
    ("priority", "max_value", "priority: Ensure this value is less than or equal to 4."),
    ("legs[1].depends_on", "invalid", "legs[1].depends_on: no leg 'ap' in this convoy."),
)
_BAD_QUERY = _example(
    "a query parameter the list does not take",
    ("serch", "unknown_parameter",
     "unknown query parameter 'serch'; this list takes: format, limit, offset, ordering, "
     "search, state."),
)  # fmt: skip
_EXAMPLES = {
    "400": {"fields": _BAD_FIELDS, "query": _BAD_QUERY},
    "401": {"token": _example("a bad token", (None, "authentication_failed", "Invalid token."))},
    "403": {
        "not yours": _example(
            "another agent's rig",
            (None, "permission_denied", "Agents may only act on their own rigs."),
        )
    },
    "404": {"missing": _example("no such object", (None, "not_found", "rig 99 does not exist."))},
    "409": {
        "claimed": _example(
            "a conflict with the current state",
            (None, "claimed", "gt-a1b2 is already claimed by claude-2."),
        )
    },
    "415": {
        "not json": _example(
            "a body that is not JSON",
            (None, "unsupported_media_type", 'Unsupported media type "text/plain" in request.'),
        )
    },
    "429": {
        "throttled": _example(
            "over the token's budget",
            (None, "throttled", "Request was throttled. Expected available in 12 seconds."),
        )
    },
}


def add_error_responses(result: dict, generator, request, public) -> dict:
    """Postprocessing hook: every operation documents the error body, with examples, for the
    statuses it can answer with (409 and 415 only where a request can change something)."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    ref = {"$ref": "#/components/schemas/Error"}
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            public_op = operation.get("security") == [{}] or {} in operation.get("security", [])
            reads = method in ("get", "head")
            for code, description in _ERRORS.items():
                if code in ("409", "415") and reads:
                    continue
                if code in ("401", "403") and public_op and reads:
                    continue
                examples = _EXAMPLES[code]
                if code == "400":  # a read is refused for its query string, a write for its body
                    examples = {"query": _BAD_QUERY} if reads else {"fields": _BAD_FIELDS}
                operation["responses"].setdefault(
                    code,
                    {
                        "description": description,
                        "content": {"application/json": {"schema": ref, "examples": examples}},
                    },
                )
    return result
