"""HTTP routes of the API: plain functions of a request dict, registered in ROUTES."""

from src.api.tokens import parse_token

ROUTES = {}


def route(path):
    def register(view):
        ROUTES[path] = view
        return view

    return register


@route("/health")
def health(request):
    return 200, {"status": "ok"}


@route("/me")
def me(request):
    user = parse_token(request.get("token", ""))
    return (200, {"user": user}) if user else (401, {"error": "invalid token"})
