"""HTTP routes of the API: plain functions of a request dict, registered in ROUTES."""

from src.api.tokens import make_token, parse_token

ROUTES = {}
USERS = {"ada": "lovelace", "grace": "hopper"}  # demo accounts


def route(path):
    def register(view):
        ROUTES[path] = view
        return view

    return register


@route("/health")
def health(request):
    return 200, {"status": "ok"}


@route("/login")
def login(request):
    user, password = request.get("user"), request.get("password")
    if not user or USERS.get(user) != password:
        return 401, {"error": "wrong user name or password"}
    return 200, {"token": make_token(user)}


@route("/me")
def me(request):
    claims = parse_token(request.get("token", ""))
    if claims is None:
        return 401, {"error": "missing, invalid or expired token"}
    return 200, claims
