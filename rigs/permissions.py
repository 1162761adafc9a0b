"""Who may do what. Checked on the object, not only on the endpoint.

- Agents read what they need to coordinate (convoys, rigs, beads, merge requests, events) and
  write only to their own rigs and those rigs' beads, merge requests and notifications.
- People have roles (Django groups): `viewer` reads; `operator` also creates convoys and rigs,
  launches, moves beads and requests merges; staff and superusers (admins) may do everything.
  A person in neither group (and not staff) is refused: a login is not a role.
"""

from rest_framework import permissions

from rigs.auth import AgentUser, calling_agent
from rigs.models import Rig

OPERATOR_GROUP = "operator"
VIEWER_GROUP = "viewer"


def _roles(user) -> set[str]:
    """The user's role groups, read once per request (cached on the user object)."""
    cached = getattr(user, "_gastown_roles", None)
    if cached is None:
        cached = set(
            user.groups.filter(name__in=[OPERATOR_GROUP, VIEWER_GROUP]).values_list(
                "name", flat=True
            )
        )
        user._gastown_roles = cached
    return cached


def is_person(user) -> bool:
    return bool(user and user.is_authenticated and not isinstance(user, AgentUser))


def is_admin(user) -> bool:
    return is_person(user) and bool(user.is_superuser or user.is_staff)


def is_operator(user) -> bool:
    if not is_person(user):
        return False
    return is_admin(user) or OPERATOR_GROUP in _roles(user)


def is_viewer(user) -> bool:
    """May read the API (every role includes reading)."""
    return is_operator(user) or (is_person(user) and VIEWER_GROUP in _roles(user))


def person_roles(user) -> list[str]:
    if not is_person(user):
        return []
    roles = sorted(_roles(user))
    if is_admin(user):
        roles.append("admin")
    return roles


def owns_rig(request, rig) -> bool:
    agent = calling_agent(request)
    return agent is not None and rig is not None and rig.agent_id == agent.id


class HasRole(permissions.BasePermission):
    """The default: an agent, or a person with a role. (Writes are checked by the views and the
    object permissions below.)"""

    message = "Your account has no role: ask an admin to add you to 'viewer' or 'operator'."

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not user or not user.is_authenticated:
            return False
        return calling_agent(request) is not None or is_viewer(user)


class ReadOrOperator(HasRole):
    """Safe methods for agents and every role; writes for operators only."""

    def has_permission(self, request, view) -> bool:
        if not super().has_permission(request, view):
            return False
        if request.method in permissions.SAFE_METHODS or is_operator(request.user):
            return True
        self.message = "Only operators may do this."
        return False


class RigWrite(HasRole):
    """Writes on a rig (or on something of one rig): an operator, or the agent that owns it.
    Views whose object is not a rig say which rig it belongs to with `rig_of(obj)`."""

    message = "Agents may only act on their own rigs."

    def has_object_permission(self, request, view, obj) -> bool:
        if request.method in permissions.SAFE_METHODS:
            return True
        rig = view.rig_of(obj) if hasattr(view, "rig_of") else obj
        if is_operator(request.user) or owns_rig(request, rig):
            return True
        self.message = (
            "Agents may only act on their own rigs."
            if calling_agent(request)
            else "Only operators may do this."
        )
        return False


# --- commands the server runs ------------------------------------------------------------------
# Fields whose value the server executes (through /bin/sh) or copies onto disk for every rig:
# admins (staff, superusers) set them, in the admin; nobody sets them through the API. (A
# person who may set these may run anything as the server's user.)
COMMAND_FIELDS = ("gate_command", "setup_command", "copy_files", "link_files", "runtime_command")


def command_fields_check(user, data) -> None:
    """Refuse (403, naming the field) a request body that sets a command field, unless the
    caller is an admin. Sending one empty is not setting it."""
    if is_admin(user) or not hasattr(data, "get"):
        return
    from common.errors import Refusal

    for name in COMMAND_FIELDS:
        if name in data and data.get(name) not in (None, "", [], {}):
            raise Refusal(
                f"'{name}' is a command the server runs: only an admin may set it (in the admin).",
                code="permission_denied",
                field=name,
                status=403,
            )


def may_write_bead(user_or_request, bead) -> bool:
    """May this person or agent change this bead (edit, close, add or drop its dependencies)?
    Operators; the agent whose rig holds the bead; for a pool bead (no rig), the agent holding
    it. `bead` is read by its attributes (`rig_id`, `rig.agent_id`, `assignee_id`): rigs does
    not import convoys."""
    user = getattr(user_or_request, "user", user_or_request)
    if is_operator(user):
        return True
    agent = getattr(user, "agent", None) if isinstance(user, AgentUser) else None
    if agent is None:
        return False
    if bead.rig_id is not None:
        return bead.rig.agent_id == agent.id
    return bead.assignee_id == agent.id


def agent_repository_ids(agent) -> set[int]:
    """The repositories an agent works in: those of its rigs that are not archived."""
    cached = getattr(agent, "_gastown_repository_ids", None)
    if cached is None:
        cached = set(
            Rig.objects.filter(agent=agent)
            .exclude(state=Rig.State.ARCHIVED)
            .values_list("repository_id", flat=True)
        )
        agent._gastown_repository_ids = cached
    return cached


def may_coordinate_in(user_or_request, repository_id: int | None) -> bool:
    """May this person or agent write to other rigs of this repository: send their rigs a
    message, comment on their beads? Operators anywhere; an agent in the repositories it works
    in (one of its rigs is there); viewers and people without a role nowhere."""
    user = getattr(user_or_request, "user", user_or_request)
    if is_operator(user):
        return True
    agent = getattr(user, "agent", None) if isinstance(user, AgentUser) else None
    return agent is not None and repository_id in agent_repository_ids(agent)
