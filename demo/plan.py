"""The demo convoy "Build the authentication system": its legs, their beads, and the sample
repository they work on, read from the real files under `demo/sample_app/`:

    sample_app/start/<path>                   the sample repository as it starts (two commits)
    sample_app/beads/<leg>/<bead>/<path>      what that bead writes to <path>
    sample_app/beads/<leg>/<bead>/<path>.append   what it appends to <path>

Five legs:

    api ─┬─> frontend ──> docs        deploy (on its own)
         ├─> tests
         └──────────────> docs

Each bead's description carries its changes as fenced blocks, which the scripted agent applies:

    ```gastown-change path=src/api/tokens.py mode=write
    <the file's new content>
    ```

The api leg moves session tokens from format v1 (`v1:<user>`) to signed, expiring v2 tokens, so
when it lands the cascade tells frontend and tests (which watch `src/api/`) that the interface
changed. Legs edit disjoint paths, so nothing conflicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from convoys.models import Bead

SAMPLE_APP = Path(__file__).resolve().parent / "sample_app"
START = SAMPLE_APP / "start"
BEADS = SAMPLE_APP / "beads"
APPEND_SUFFIX = ".append"

CONVOY_TITLE = "Build the authentication system"
CONVOY_DESCRIPTION = (
    "The article's convoy: five agents build sign-in for the sample app, each in its own rig, in "
    "three waves (api and deploy; then frontend and tests; then docs). The API leg changes the "
    "token format; the cascade tells the frontend and the tests."
)
AGENT_PREFIX = "demo-"


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


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


def bead_changes(
    leg: str, bead: str, *, write: tuple[str, ...] = (), append: tuple[str, ...] = ()
) -> tuple[Change, ...]:
    """The changes of bead `bead` of leg `leg`, read from `sample_app/beads/<leg>/<bead>/`."""
    folder = BEADS / leg / bead
    return (
        *(Change(path, _read(folder / path)) for path in write),
        *(Change(path, _read(folder / f"{path}{APPEND_SUFFIX}"), "append") for path in append),
    )


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

SAMPLE_COMMITS: list[tuple[str, dict[str, str]]] = [
    (message, {path: _read(START / path) for path in paths})
    for message, paths in [
        ("Start sample-app", ["README.md", ".gitignore"]),
        (
            "Token API v1, login page placeholder, tests, docs and deployment notes",
            [
                "src/api/__init__.py",
                "src/api/tokens.py",
                "src/api/routes.py",
                "src/frontend/login.js",
                "tests/__init__.py",
                "tests/test_tokens.py",
                "docs/index.md",
                "deploy/README.md",
            ],
        ),
    ]
]

# --- what the legs change ---------------------------------------------------------------------

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
                changes=bead_changes("api", "tokens", write=("src/api/tokens.py",)),
                priority=1,
                type=Bead.Type.FEATURE,
            ),
            BeadPlan(
                key="routes",
                title="Login and session endpoints",
                summary="/login issues a v2 token; /me answers the claims of a valid one.",
                changes=bead_changes("api", "routes", write=("src/api/routes.py",)),
                after=("tokens",),
            ),
            BeadPlan(
                key="logout",
                title="Logout endpoint",
                summary="/logout: tokens are stateless, so the client just forgets its token.",
                changes=bead_changes("api", "logout", append=("src/api/routes.py",)),
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
                changes=bead_changes("frontend", "session", write=("src/frontend/session.js",)),
                priority=1,
            ),
            BeadPlan(
                key="login-form",
                title="Login form",
                summary="The form posts to /login and stores the token it gets back.",
                changes=bead_changes("frontend", "login-form", write=("src/frontend/login.js",)),
                after=("session",),
                type=Bead.Type.FEATURE,
            ),
            BeadPlan(
                key="session-tests",
                title="Tests for the session store",
                summary="node --test checks for the v2 token parser.",
                changes=bead_changes(
                    "frontend", "session-tests", write=("src/frontend/session.test.js",)
                ),
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
                changes=bead_changes("tests", "token-tests", write=("tests/test_tokens.py",)),
                priority=1,
            ),
            BeadPlan(
                key="flow-tests",
                title="Sign-in flow tests",
                summary="Log in, ask who I am, and refuse bad passwords and forged tokens.",
                changes=bead_changes("tests", "flow-tests", write=("tests/test_routes.py",)),
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
                changes=bead_changes("docs", "token-docs", write=("docs/tokens.md",)),
                priority=1,
            ),
            BeadPlan(
                key="login-docs",
                title="Document signing in",
                summary="docs/login.md, and link both guides from the index.",
                changes=bead_changes(
                    "docs", "login-docs", write=("docs/login.md",), append=("docs/index.md",)
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
                changes=bead_changes("deploy", "image", write=("deploy/Dockerfile",)),
                priority=1,
            ),
            BeadPlan(
                key="secret",
                title="Configure the token signing secret",
                summary="deploy/env.example and the runbook in deploy/README.md.",
                changes=bead_changes(
                    "deploy", "secret", write=("deploy/env.example", "deploy/README.md")
                ),
                after=("image",),
            ),
        ),
    ),
)
