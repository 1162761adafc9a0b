"""The demo a newcomer sees on `make run`: a sample repository and the article's convoy.

`demo_seed` writes a small app into a new bare repository (tokens API, login page, tests, docs,
deployment notes), registers it with a fast real gate, creates one scripted agent per leg and
the convoy "Build the authentication system" with five legs:

    api ─┬─> frontend ──> docs        deploy (on its own)
         ├─> tests
         └──────────────> docs

Each leg's beads carry the exact file changes the scripted agent makes, as fenced blocks:

    ```gastown-change path=src/api/tokens.py mode=write
    <the file's new content>
    ```

(`mode=append` appends instead). The api leg moves session tokens from format v1 (`v1:<user>`)
to signed, expiring v2 tokens, so when it lands the cascade tells frontend and tests (which
watch `src/api/`) that the interface changed. Legs edit disjoint paths, so nothing conflicts.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import transaction

from convoys import services as convoy_services
from convoys.models import Bead, Convoy, Leg
from rigs import git
from rigs import services as rig_services
from rigs.models import Agent, Repository

SAMPLE_NAME = "sample-app"
CONVOY_TITLE = "Build the authentication system"
CONVOY_DESCRIPTION = (
    "The article's convoy: five agents build sign-in for the sample app at once, each in its own "
    "rig. The API leg changes the token format; the cascade tells the frontend and the tests."
)
# Real and fast: every merge candidate must at least compile.
GATE_COMMAND = "python3 -m compileall -q src tests"
AGENT_PREFIX = "demo-"


@dataclass(frozen=True)
class Change:
    """One scripted file change, as the scripted agent reads it from a bead's description."""

    path: str
    content: str
    mode: str = "write"  # or "append"

    def __post_init__(self) -> None:
        if self.mode not in ("write", "append") or not self.content.endswith("\n"):
            raise ValueError(f"bad scripted change for {self.path}")
        if "```" in self.content:
            raise ValueError(f"{self.path}: a change cannot contain a code fence")

    def block(self) -> str:
        return f"```gastown-change path={self.path} mode={self.mode}\n{self.content}```"


@dataclass(frozen=True)
class BeadPlan:
    key: str
    title: str
    summary: str
    changes: tuple[Change, ...]
    after: tuple[str, ...] = ()  # keys of beads (in the same leg) this one waits for
    priority: int = 2
    type: str = Bead.Type.TASK

    def description(self) -> str:
        return "\n\n".join([self.summary, *(change.block() for change in self.changes)]) + "\n"


@dataclass(frozen=True)
class LegPlan:
    key: str
    title: str
    description: str
    scope: list[str]
    beads: tuple[BeadPlan, ...]
    watch: list[str] = field(default_factory=list)
    depends_on: list[str] = field(default_factory=list)

    @property
    def agent_name(self) -> str:
        return f"{AGENT_PREFIX}{self.key}"


# --- the sample repository as it starts ------------------------------------------------------

README = """\
# sample-app

A tiny web app with a token-based API, a login page, tests, docs and deployment notes. Gas
Town's demo convoy, "Build the authentication system", builds its sign-in with five agents at
once.

    src/api/        tokens and HTTP routes (plain functions, no framework)
    src/frontend/   the login page
    tests/          unit tests: python3 -m unittest discover -s tests -t .
    docs/           user documentation
    deploy/         deployment configuration
"""

GITIGNORE = """\
__pycache__/
*.pyc
"""

API_INIT = '''\
"""The sample app's HTTP API."""
'''

TESTS_INIT = '''\
"""The sample app's unit tests: python3 -m unittest discover -s tests -t ."""
'''

TOKENS_V1 = '''\
"""Session tokens, format v1: ``v1:<user>``. Unsigned: anyone can forge one (to be replaced)."""

PREFIX = "v1"


def make_token(user: str) -> str:
    """A token naming ``user``."""
    return f"{PREFIX}:{user}"


def parse_token(token: str) -> str | None:
    """The user a token names, or None."""
    prefix, _, user = token.partition(":")
    return user if prefix == PREFIX and user else None
'''

ROUTES_V1 = '''\
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
'''

LOGIN_JS_V1 = """\
// Login page: a placeholder until the frontend leg builds the form.
export function renderLogin(root) {
  root.textContent = "Sign in (coming soon)";
}
"""

TEST_TOKENS_V1 = '''\
"""Tokens, format v1."""

import unittest

from src.api.tokens import make_token, parse_token


class TokenTests(unittest.TestCase):
    def test_round_trip(self):
        self.assertEqual(parse_token(make_token("ada")), "ada")


if __name__ == "__main__":
    unittest.main()
'''

DOCS_INDEX = """\
# sample-app

A tiny web app: a token API, a login page.

## Getting started

Run the tests from the repository root: `python3 -m unittest discover -s tests -t .`
"""

DEPLOY_README = """\
# Deployment

Nothing is deployed yet. The deploy leg adds a container image and its configuration.
"""

SAMPLE_COMMITS: list[tuple[str, dict[str, str]]] = [
    ("Start sample-app", {"README.md": README, ".gitignore": GITIGNORE}),
    (
        "Token API v1, login page placeholder, tests, docs and deployment notes",
        {
            "src/api/__init__.py": API_INIT,
            "src/api/tokens.py": TOKENS_V1,
            "src/api/routes.py": ROUTES_V1,
            "src/frontend/login.js": LOGIN_JS_V1,
            "tests/__init__.py": TESTS_INIT,
            "tests/test_tokens.py": TEST_TOKENS_V1,
            "docs/index.md": DOCS_INDEX,
            "deploy/README.md": DEPLOY_README,
        },
    ),
]

# --- what the legs change ---------------------------------------------------------------------

TOKENS_V2 = '''\
"""Session tokens, format v2: ``v2.<user>.<expires>.<signature>``.

``expires`` is a Unix time; the signature is an HMAC-SHA256 of the rest, keyed by the
TOKEN_SECRET environment variable. v1 tokens (``v1:<user>``, unsigned) are refused.
"""

import hashlib
import hmac
import os
import time

VERSION = "v2"
LIFETIME_SECONDS = 3600
SECRET = os.environ.get("TOKEN_SECRET", "dev-only-secret").encode()


def _signature(payload: str) -> str:
    return hmac.new(SECRET, payload.encode(), hashlib.sha256).hexdigest()[:32]


def make_token(user: str, *, now: float | None = None) -> str:
    """A signed token for ``user`` that expires LIFETIME_SECONDS after ``now``."""
    if not user or "." in user:
        raise ValueError("a user name is non-empty and has no '.'")
    expires = int((time.time() if now is None else now) + LIFETIME_SECONDS)
    payload = f"{VERSION}.{user}.{expires}"
    return f"{payload}.{_signature(payload)}"


def parse_token(token: str, *, now: float | None = None) -> dict | None:
    """``{"user": ..., "expires": ...}`` for a valid, unexpired v2 token; else None."""
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != VERSION or not parts[2].isdigit():
        return None
    version, user, expires, signature = parts
    if not hmac.compare_digest(signature, _signature(f"{version}.{user}.{expires}")):
        return None
    if int(expires) < (time.time() if now is None else now):
        return None
    return {"user": user, "expires": int(expires)}
'''

ROUTES_V2 = '''\
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
'''

ROUTES_LOGOUT = '''\


@route("/logout")
def logout(request):
    """Tokens are stateless: the client forgets its token; there is nothing to revoke yet."""
    return 204, {}
'''

SESSION_JS = """\
// The signed-in session. The API's tokens are format v2: `v2.<user>.<expires>.<signature>`.
const KEY = "session-token";

export function parseToken(token) {
  const [version, user, expires, signature, ...rest] = (token || "").split(".");
  if (version !== "v2" || !user || !signature || rest.length) return null;
  return { user, expires: Number(expires) };
}

export function saveSession(token, storage = window.localStorage) {
  if (!parseToken(token)) throw new Error("unexpected token format");
  storage.setItem(KEY, token);
}

export function currentUser(storage = window.localStorage, now = Date.now() / 1000) {
  const session = parseToken(storage.getItem(KEY));
  return session && session.expires > now ? session.user : null;
}

export function clearSession(storage = window.localStorage) {
  storage.removeItem(KEY);
}
"""

LOGIN_JS_V2 = """\
// Login page: trades a user name and password for a session token (format v2).
import { saveSession } from "./session.js";

export function renderLogin(root, { fetch = window.fetch, onSignedIn = () => {} } = {}) {
  root.innerHTML = `
    <form class="login">
      <label>User <input name="user" autocomplete="username" required></label>
      <label>Password <input name="password" type="password" required></label>
      <button type="submit">Sign in</button>
      <p class="error" hidden></p>
    </form>`;
  const form = root.querySelector("form");
  const error = form.querySelector(".error");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = JSON.stringify(Object.fromEntries(new FormData(form)));
    const response = await fetch("/login", { method: "POST", body });
    const data = await response.json();
    if (!response.ok) {
      error.textContent = data.error;
      error.hidden = false;
      return;
    }
    saveSession(data.token);
    onSignedIn();
  });
}
"""

SESSION_TEST_JS = """\
// Run with: node --test src/frontend/
import { test } from "node:test";
import assert from "node:assert/strict";
import { currentUser, parseToken } from "./session.js";

const stored = (token) => ({ getItem: () => token });

test("reads a v2 token", () => {
  assert.deepEqual(parseToken("v2.ada.2000000000.c0ffee"), { user: "ada", expires: 2000000000 });
});

test("refuses a v1 token", () => {
  assert.equal(parseToken("v1:ada"), null);
});

test("an expired session has no user", () => {
  assert.equal(currentUser(stored("v2.ada.100.c0ffee"), 200), null);
});
"""

TEST_TOKENS_V2 = '''\
"""Tokens, format v2: signed, expiring; v1 is refused."""

import unittest

from src.api.tokens import LIFETIME_SECONDS, make_token, parse_token


class TokenTests(unittest.TestCase):
    def test_round_trip(self):
        claims = parse_token(make_token("ada", now=1000), now=1000)
        self.assertEqual(claims, {"user": "ada", "expires": 1000 + LIFETIME_SECONDS})

    def test_tampered_token_is_refused(self):
        token = make_token("ada", now=1000)
        self.assertIsNone(parse_token(token.replace("ada", "eve"), now=1000))

    def test_expired_token_is_refused(self):
        token = make_token("ada", now=1000)
        self.assertIsNone(parse_token(token, now=1000 + LIFETIME_SECONDS + 1))

    def test_v1_token_is_refused(self):
        self.assertIsNone(parse_token("v1:ada"))


if __name__ == "__main__":
    unittest.main()
'''

TEST_ROUTES = '''\
"""The sign-in flow through the routes: log in, then ask who I am."""

import unittest

from src.api.routes import ROUTES


class SignInTests(unittest.TestCase):
    def test_login_then_me(self):
        status, body = ROUTES["/login"]({"user": "ada", "password": "lovelace"})
        self.assertEqual(status, 200)
        status, me = ROUTES["/me"]({"token": body["token"]})
        self.assertEqual((status, me["user"]), (200, "ada"))

    def test_wrong_password_is_refused(self):
        status, _ = ROUTES["/login"]({"user": "ada", "password": "guess"})
        self.assertEqual(status, 401)

    def test_forged_v1_token_is_refused(self):
        status, _ = ROUTES["/me"]({"token": "v1:ada"})
        self.assertEqual(status, 401)


if __name__ == "__main__":
    unittest.main()
'''

DOCS_TOKENS = """\
# Tokens

The API signs people in with tokens of format **v2**:

    v2.<user>.<expires>.<signature>

- `expires`: a Unix time, one hour after sign-in (`LIFETIME_SECONDS`).
- `signature`: HMAC-SHA256 of `v2.<user>.<expires>`, keyed by the `TOKEN_SECRET` environment
  variable. Change the secret and every token in circulation stops working.

`make_token(user)` issues one; `parse_token(token)` returns `{"user": ..., "expires": ...}` for a
valid, unexpired token and `None` otherwise. Format v1 tokens (`v1:<user>`, unsigned) are
refused.
"""

DOCS_LOGIN = """\
# Signing in

1. The login page (`src/frontend/login.js`) posts the user name and password to `/login`.
2. `/login` answers `{"token": "v2...."}`; the page keeps it in local storage.
3. Each call sends the token; `/me` answers who it names, or 401 once it has expired.
4. `/logout` answers 204: the page forgets its token.
"""

DOCS_INDEX_GUIDES = """\

## Guides

- [Tokens](tokens.md): the v2 signed token format
- [Signing in](login.md): the login page and the session endpoints
"""

DOCKERFILE = """\
FROM python:3.12-slim
WORKDIR /app
COPY src ./src
COPY tests ./tests
ENV PYTHONUNBUFFERED=1
# Tokens are signed with TOKEN_SECRET: pass it at run time (see deploy/env.example).
CMD ["python", "-m", "unittest", "discover", "-s", "tests", "-t", "."]
"""

ENV_EXAMPLE = """\
# Copy to .env and fill in. Never commit the real secret.
TOKEN_SECRET=change-me-to-32-random-bytes
"""

DEPLOY_README_V2 = """\
# Deployment

    docker build -f deploy/Dockerfile -t sample-app .
    docker run --env-file deploy/.env sample-app

The API signs session tokens with `TOKEN_SECRET` (see `deploy/env.example`); rotating it signs
everyone out.
"""

LEGS: tuple[LegPlan, ...] = (
    LegPlan(
        key="api",
        title="API endpoints and business logic",
        description="Signed, expiring session tokens (format v2) and the sign-in endpoints.",
        scope=["src/api/**"],
        beads=(
            BeadPlan(
                key="tokens",
                title="Sign session tokens (token format v2)",
                summary="Replace the unsigned v1 tokens with signed, expiring v2 tokens. This "
                "changes make_token and parse_token: the frontend and the tests must follow.",
                changes=(Change("src/api/tokens.py", TOKENS_V2),),
                priority=1,
                type=Bead.Type.FEATURE,
            ),
            BeadPlan(
                key="routes",
                title="Login and session endpoints",
                summary="/login issues a v2 token; /me answers the claims of a valid one.",
                changes=(Change("src/api/routes.py", ROUTES_V2),),
                after=("tokens",),
            ),
            BeadPlan(
                key="logout",
                title="Logout endpoint",
                summary="/logout: tokens are stateless, so the client just forgets its token.",
                changes=(Change("src/api/routes.py", ROUTES_LOGOUT, mode="append"),),
                after=("routes",),
                priority=3,
            ),
        ),
    ),
    LegPlan(
        key="frontend",
        title="Frontend components",
        description="The login page and the session it keeps, for v2 tokens.",
        scope=["src/frontend/**"],
        watch=["src/api/tokens.py"],
        depends_on=["api"],
        beads=(
            BeadPlan(
                key="session",
                title="Session store for v2 tokens",
                summary="Keep the token and read its user and expiry (format v2).",
                changes=(Change("src/frontend/session.js", SESSION_JS),),
                priority=1,
            ),
            BeadPlan(
                key="login-form",
                title="Login form",
                summary="The form posts to /login and stores the token it gets back.",
                changes=(Change("src/frontend/login.js", LOGIN_JS_V2),),
                after=("session",),
                type=Bead.Type.FEATURE,
            ),
            BeadPlan(
                key="session-tests",
                title="Tests for the session store",
                summary="node --test checks for the v2 token parser.",
                changes=(Change("src/frontend/session.test.js", SESSION_TEST_JS),),
                after=("session",),
                priority=3,
            ),
        ),
    ),
    LegPlan(
        key="tests",
        title="Integration tests",
        description="Tests for the v2 tokens and the sign-in flow through the routes.",
        scope=["tests/**"],
        watch=["src/api/**"],
        depends_on=["api"],
        beads=(
            BeadPlan(
                key="token-tests",
                title="Token tests for format v2",
                summary="Round trip, tampering, expiry, and v1 refused.",
                changes=(Change("tests/test_tokens.py", TEST_TOKENS_V2),),
                priority=1,
            ),
            BeadPlan(
                key="flow-tests",
                title="Sign-in flow tests",
                summary="Log in, ask who I am, and refuse bad passwords and forged tokens.",
                changes=(Change("tests/test_routes.py", TEST_ROUTES),),
                after=("token-tests",),
            ),
        ),
    ),
    LegPlan(
        key="docs",
        title="Documentation",
        description="Document the token format and the sign-in flow once both exist.",
        scope=["docs/**"],
        depends_on=["api", "frontend"],
        beads=(
            BeadPlan(
                key="token-docs",
                title="Document the token format",
                summary="docs/tokens.md: format v2, signing, expiry.",
                changes=(Change("docs/tokens.md", DOCS_TOKENS),),
                priority=1,
            ),
            BeadPlan(
                key="login-docs",
                title="Document signing in",
                summary="docs/login.md, and link both guides from the index.",
                changes=(
                    Change("docs/login.md", DOCS_LOGIN),
                    Change("docs/index.md", DOCS_INDEX_GUIDES, mode="append"),
                ),
                after=("token-docs",),
            ),
        ),
    ),
    LegPlan(
        key="deploy",
        title="Deployment config",
        description="A container image and the signing secret's configuration.",
        scope=["deploy/**"],
        beads=(
            BeadPlan(
                key="image",
                title="Container image",
                summary="deploy/Dockerfile: the app and its tests in a slim Python image.",
                changes=(Change("deploy/Dockerfile", DOCKERFILE),),
                priority=1,
            ),
            BeadPlan(
                key="secret",
                title="Configure the token signing secret",
                summary="deploy/env.example and the runbook in deploy/README.md.",
                changes=(
                    Change("deploy/env.example", ENV_EXAMPLE),
                    Change("deploy/README.md", DEPLOY_README_V2),
                ),
                after=("image",),
            ),
        ),
    ),
)


# --- seeding ----------------------------------------------------------------------------------


def demo_root() -> Path:
    """Where the sample repository goes: `<DATA_DIR>/repositories`, or the first repository root
    when the settings do not allow that."""
    preferred = (Path(settings.DATA_DIR) / "repositories").resolve()
    roots = [Path(root).resolve() for root in settings.GASTOWN_REPOSITORY_ROOTS]
    if not roots or any(preferred.is_relative_to(root) for root in roots):
        return preferred
    return roots[0]


def _free_location() -> tuple[str, Path]:
    """A repository name and path nothing uses yet (on disk, in the database, or as a worktree
    directory left by an earlier database): `sample-app`, then `sample-app-2`, ..."""
    root = demo_root()
    worktrees = Path(settings.GASTOWN_WORKTREE_ROOT)
    for n in range(1, 1000):
        name = SAMPLE_NAME if n == 1 else f"{SAMPLE_NAME}-{n}"
        path = root / f"{name}.git"
        taken = Repository.objects.filter(name=name).exists() or (
            Repository.objects.filter(path=str(path)).exists()
        )
        if not taken and not path.exists() and not (worktrees / name).exists():
            return name, path
    raise RuntimeError(f"no free name for the sample repository under {root}")


def sample_repository_create(path: Path) -> str:
    """Make the bare sample repository at `path` with its history on `main`; returns the tip."""
    git.init_repository(path, initial_branch="main", bare=True)
    tip = None
    for message, files in SAMPLE_COMMITS:
        tip = git.commit_files(path, files, message, parent=tip)
    assert tip is not None
    git.update_ref(path, "refs/heads/main", tip, git.ZERO_OID, message="gastown: demo seed")
    return tip


def _agent(name: str, pace: float) -> Agent:
    """The leg's scripted agent; an existing agent of that name is reused as it is."""
    existing = Agent.objects.filter(name=name).first()
    if existing is not None:
        return existing
    agent, _token = rig_services.agent_create(
        name=name, runtime=Agent.Runtime.SCRIPTED, runtime_command=f"gastown-agent --pace {pace:g}"
    )
    return agent


def _beads_create(leg: Leg, plan: LegPlan) -> list[Bead]:
    """The leg's beads, waiting in the convoy's pool until launch moves them into its rig."""
    beads: dict[str, Bead] = {}
    for bead_plan in plan.beads:
        beads[bead_plan.key] = convoy_services.bead_create(
            leg=leg,
            title=bead_plan.title,
            description=bead_plan.description(),
            priority=bead_plan.priority,
            type=bead_plan.type,
            labels=["demo", plan.key],
        )
        for key in bead_plan.after:
            convoy_services.bead_dependency_add(bead=beads[bead_plan.key], depends_on=beads[key])
    return list(beads.values())


def demo_seed(*, pace: float = 1.5, launch: bool = True) -> Convoy:
    """Make the sample repository, register it, create the agents, the convoy and its beads, and
    launch it (the runner then starts each leg's scripted agent as the leg is handed out).

    `pace`: seconds the scripted agents pause between steps (so people can watch). The git work
    happens before the one database transaction; if that fails, the new repository is removed.
    """
    if not (math.isfinite(pace) and pace >= 0):
        raise ValueError(f"pace must be a non-negative number of seconds, not {pace!r}")
    name, path = _free_location()
    sample_repository_create(path)
    try:
        with transaction.atomic():
            repository = rig_services.repository_register(
                name=name, path=str(path), target_branch="main", gate_command=GATE_COMMAND
            )
            for plan in LEGS:
                _agent(plan.agent_name, pace)
            convoy = convoy_services.convoy_create(
                title=CONVOY_TITLE,
                description=CONVOY_DESCRIPTION,
                repository=repository,
                legs=[
                    {
                        "key": plan.key,
                        "title": plan.title,
                        "description": plan.description,
                        "agent": plan.agent_name,
                        "scope": plan.scope,
                        "watch": plan.watch,
                        "depends_on": plan.depends_on,
                    }
                    for plan in LEGS
                ],
            )
            legs = {leg.key: leg for leg in convoy.legs.all()}
            for plan in LEGS:
                _beads_create(legs[plan.key], plan)
            if launch:
                convoy = convoy_services.convoy_launch(convoy=convoy)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return convoy


def demo_is_needed() -> bool:
    """Only an empty installation gets the demo: no convoy and no repository yet."""
    return not (Convoy.objects.exists() or Repository.objects.exists())


def demo_seed_if_empty(*, pace: float = 1.5, launch: bool = True) -> Convoy | None:
    """`demo_seed` on an empty installation; None (and nothing done) otherwise."""
    if not demo_is_needed():
        return None
    return demo_seed(pace=pace, launch=launch)
