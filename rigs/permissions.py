"""Who may do what. Reads: anyone authenticated. Writes: operators and admins (people), or an
agent on its own rigs. Checked on the object, not only on the endpoint."""

from rest_framework import permissions

from rigs.auth import calling_agent

OPERATOR_GROUP = "operator"
VIEWER_GROUP = "viewer"


def is_operator(user) -> bool:
    if not user or not user.is_authenticated or getattr(user, "agent", None):
        return False
    return bool(
        user.is_superuser or user.is_staff or user.groups.filter(name=OPERATOR_GROUP).exists()
    )


def owns_rig(request, rig) -> bool:
    agent = calling_agent(request)
    return agent is not None and rig is not None and rig.agent_id == agent.id


class ReadOrOperator(permissions.BasePermission):
    """Safe methods for everyone authenticated; writes for operators only."""

    message = "Only operators may change this."

    def has_permission(self, request, view) -> bool:
        if not request.user or not request.user.is_authenticated:
            return False
        return request.method in permissions.SAFE_METHODS or is_operator(request.user)


class RigWrite(permissions.BasePermission):
    """Writes on a rig: an operator, or the agent that owns the rig."""

    message = "Agents may only act on their own rigs."

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated)

    def has_object_permission(self, request, view, obj) -> bool:
        if request.method in permissions.SAFE_METHODS:
            return True
        return is_operator(request.user) or owns_rig(request, obj)
