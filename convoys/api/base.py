"""What the convoys API views share: reading a body, finding an object (404, or 400 naming the
field for an id given in a body), a bead by id or short id, the bead write check."""

import re

from django.db.models import QuerySet
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.request import Request

from common.api import body  # noqa: F401 (the views' one way to read a body)
from common.params import id_or_none
from convoys.models import Bead
from rigs.auth import calling_agent
from rigs.permissions import may_write_bead

SHORT_ID_RE = re.compile(r"^gt-[0-9a-z]{1,13}$")


def get_object(queryset: QuerySet, what: str, pk, field: str | None = None):
    """The object, or 404 (`field` set: 400 naming the field, for an id given in a body)."""
    number = id_or_none(pk)
    obj = queryset.filter(pk=number).first() if number is not None else None
    if obj is None:
        if field:
            raise ValidationError({field: f"{what} {pk} does not exist."})
        raise NotFound(f"{what} {pk} does not exist.")
    return obj


def bead_by_ref(ref: int | str, field: str | None = None) -> Bead:
    """A bead by id or short id (`gt-a1b2`)."""
    qs = Bead.objects.select_related("rig", "assignee")
    text = str(ref).strip()
    number = id_or_none(text)
    if number is not None:
        bead = qs.filter(pk=number).first()
    elif SHORT_ID_RE.match(text.lower()):
        bead = qs.filter(short_id=text.lower()).first()
    else:
        bead = None  # not an id: no query (and no NUL bytes sent to the database)
    if bead is None:
        if field:
            raise ValidationError({field: f"bead {text} does not exist."})
        raise NotFound(f"bead {text} does not exist.")
    return bead


def check_bead_write(request: Request, bead: Bead) -> None:
    """403 unless `rigs.permissions.may_write_bead`, saying why."""
    if may_write_bead(request, bead):
        return
    if calling_agent(request) is None:
        raise PermissionDenied("Only operators and the bead's agent may change it.")
    where = f"rig {bead.rig.slug}" if bead.rig_id else "a pool"
    raise PermissionDenied(
        f"{bead.short_id} is in {where}, not one of your rigs; agents change only their own "
        "rigs' beads."
    )
