"""Cascade signal: precision and recall of the cascade on scenarios with a known answer, and the
notices the demo convoy leaves per rig (issue 16).

    .venv/bin/python bench/cascade_signal.py [--scenarios 1,2,3,4,5,6] [--no-demo | --demo-only]

Everything runs end to end on a real Celery worker process (bench/common.py): rigs are
requested and provisioned by the worker (real worktrees), their "agents" are this script
committing in the worktrees, syncs and landings are asked for as an agent would (`rig_sync_request`,
`rig_merge_request`) and run in the worker (the real merge queue, then the cascade task and the
overlap radar). After each step the script waits until the worker is idle.

Scenarios (each on its own repository; who must act, on what, is written down in advance):

1. the article's auth convoy: `api` changes the token format in auth/tokens.py; `frontend`
   (watches it), `tests` (watches auth/**, owns tests) and `docs` (owns docs) must adjust;
   `deploy` must not be asked to do anything;
2. a change to a shared module (shared/utils.py) watched by two of six rigs;
3. a dependency manifest changes (requirements.txt): every live rig must reinstall;
4. three rigs edit app/models.py: `a` and `b` the same lines (the radar must say they will
   conflict), `c` another place (information only); `a` lands: `b` must rebase (conflict
   forecast), `c` is only behind;
5. two rigs finished before the change lands (one's convoy leg landed, one without a leg,
   merged): they must get nothing; a live watcher must be told;
6. a public function is renamed (shared/api.py fetch_user -> load_user): its users (they watch
   the file) must be told, with the symbol named.

Per scenario:
- recall: expected (rig, action) pairs that got an open notice of an expected kind naming the
  expected files (and symbols, in the summary or action) / expected pairs. Goal 100%.
- precision: notices that ask for an action (severity warning or critical), created or updated
  during the scenario, that were expected (right rig, right kind) / all of them. Goal >= 90%.
- the most open notices one rig holds on one cause (topic, else kind). Goal <= 1.
- notices created or updated for a rig after it finished (its work merged). Goal 0.
Exits 1 when a goal is missed (or a scenario could not run).

The demo (`demo.seed.demo_seed`, the convoy `make run` seeds) runs to landed with the runner's
scripted agents (a worker with beat, daphne for the agents' API calls), then per rig: notices
created, updated (revisions; "bumps" also counts merges of identical notices), resolved,
acknowledged and left open, and the peaks seen while it ran. The same code runs on older
checkouts (no notice states): there "left open" is "not acknowledged".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import sys
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    bench_environment,
    celery_worker_idle,
    celery_worker_process,
    git,
    table,
)

GOAL_RECALL = 1.0
GOAL_PRECISION = 0.9
GOAL_OPEN_PER_CAUSE = 1
GOAL_FINISHED = 0
ACTION_SEVERITIES = ("warning", "critical")

# --- the sample files the scenarios start from ---------------------------------------------------

TOKENS_V1 = '''"""Session tokens, format v1: "v1:<user>"."""


def make_token(user):
    return f"v1:{user}"


def parse_token(token):
    version, user = token.split(":", 1)
    if version != "v1":
        raise ValueError("unknown token format")
    return user
'''

TOKENS_V2 = '''"""Session tokens, format v2: "v2:<user>:<expiry>:<signature>"."""

import hashlib
import hmac
import time

SECRET = b"change-me"


def make_token(user, ttl=3600):
    expiry = int(time.time()) + ttl
    body = f"v2:{user}:{expiry}"
    signature = hmac.new(SECRET, body.encode(), hashlib.sha256).hexdigest()
    return f"{body}:{signature}"


def parse_token(token):
    version, user, expiry, signature = token.split(":", 3)
    body = f"{version}:{user}:{expiry}"
    expected = hmac.new(SECRET, body.encode(), hashlib.sha256).hexdigest()
    if version != "v2" or not hmac.compare_digest(signature, expected):
        raise ValueError("bad token")
    if int(expiry) < time.time():
        raise ValueError("token expired")
    return user
'''

UTILS = '''"""Helpers shared by every module."""


def slugify(text):
    return text.strip().lower().replace(" ", "-")


def chunks(items, size):
    return [items[i : i + size] for i in range(0, len(items), size)]
'''

UTILS_V2 = UTILS.replace(
    'def slugify(text):\n    return text.strip().lower().replace(" ", "-")',
    'def slugify(text, separator="-"):\n'
    '    words = "".join(c if c.isalnum() else " " for c in text.lower()).split()\n'
    "    return separator.join(words)",
)

TRUNCATE = """

def truncate(text, size):
    return text if len(text) <= size else text[: size - 1] + "…"
"""

API = '''"""The public API of the user store."""

USERS = {}


def fetch_user(user_id):
    """The user with this id, or None."""
    return USERS.get(user_id)


def save_user(user_id, data):
    USERS[user_id] = data
'''

API_RENAMED = API.replace("def fetch_user(user_id):", "def load_user(user_id):")


def _models() -> str:
    """A file long enough that edits at its two ends merge cleanly."""
    lines = ['"""Prices and labels."""', "", "", "def price(item):"]
    lines += ["    base = item.cost", "    return base * 1.2", "", ""]
    for n in range(12):
        lines += [f"def helper_{n}(value):", f"    return value + {n}", "", ""]
    lines += ["def label(item):", '    return f"{item.name}"', ""]
    return "\n".join(lines)


MODELS = _models()
PRICE = "    base = item.cost\n    return base * 1.2"
MODELS_A = MODELS.replace(PRICE, "    return item.cost * 1.25")
MODELS_B = MODELS.replace(PRICE, "    tax = 0.2\n    return item.cost * (1 + tax)")
MODELS_C = MODELS.replace('    return f"{item.name}"', '    return f"{item.name} ({item.sku})"')

FILES = {
    "README.md": "# sample\n",
    "auth/__init__.py": "",
    "auth/tokens.py": TOKENS_V1,
    "frontend/login.js": "import { makeToken } from './api.js'\nexport const version = 'v1'\n",
    "tests/test_tokens.py": "from auth.tokens import make_token\n\n\ndef test_v1():\n"
    "    assert make_token('ann') == 'v1:ann'\n",
    "docs/index.md": "# Docs\n\nTokens are `v1:<user>`.\n",
    "deploy/README.md": "# Deploy\n",
    "requirements.txt": "django==5.2\n",
    "shared/__init__.py": "",
    "shared/utils.py": UTILS,
    "shared/api.py": API,
    "app/__init__.py": "",
    "app/models.py": MODELS,
}


# --- the expected answer and the measurement -----------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """`rig` must be told, with an open notice of one of `kinds`, naming `files` (anywhere in
    the notice, or in the follow-up bead it points to) and `symbols` (in its summary or
    action, or the bead's title)."""

    rig: str
    kinds: tuple[str, ...]
    files: tuple[str, ...] = ()
    symbols: tuple[str, ...] = ()

    def label(self) -> str:
        return f"{self.rig}: {'/'.join(self.kinds)}"


@dataclass(frozen=True)
class Gone:
    """After the step, `rig` must hold no open notice of these kinds (its cause is over). Not
    a goal of the issue's four: reported as "stale"."""

    rig: str
    kinds: tuple[str, ...]  # () for any kind
    why: str
    about: str = ""  # only notices about this other rig (its overlap topic, or its source)


@dataclass
class Result:
    name: str
    expected: int = 0
    recalled: int = 0
    asked: int = 0  # notices asking for an action (warning/critical), created or updated
    needed: int = 0  # of those, expected
    open_per_cause: int = 0
    finished_told: int = 0
    error: str = ""
    misses: list[str] = field(default_factory=list)
    unneeded: list[str] = field(default_factory=list)
    crowded: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)  # still open after their cause ended
    told: list[str] = field(default_factory=list)  # every notice created or updated (--verbose)

    @property
    def recall(self) -> float | None:
        return self.recalled / self.expected if self.expected else None

    @property
    def precision(self) -> float | None:
        return self.needed / self.asked if self.asked else None

    def goals(self) -> dict[str, bool]:
        return {
            "recall": not self.error and (self.recall is None or self.recall >= GOAL_RECALL),
            "precision": not self.error
            and (self.precision is None or self.precision >= GOAL_PRECISION),
            "open per cause": not self.error and self.open_per_cause <= GOAL_OPEN_PER_CAUSE,
            "finished rigs": not self.error and self.finished_told <= GOAL_FINISHED,
        }


def _fields() -> set[str]:
    from notifications.models import Notification

    return {f.name for f in Notification._meta.get_fields()}


def _is_open(n) -> bool:
    state = getattr(n, "state", None)
    return state == "open" if state is not None else n.acked_at is None


def _cause(n) -> str:
    """What a notice is about: its topic; without one (older code, or a one-off notice), its
    kind, per partner for an overlap and per bead for work handed out."""
    if topic := getattr(n, "topic", ""):
        return topic
    if n.kind == "overlap":
        return f"overlap with rig {n.source_rig_id}"
    if n.kind == "assigned":
        changes = n.changes if isinstance(n.changes, dict) else {}
        return f"assigned {changes.get('bead') or n.summary}"
    return f"kind:{n.kind}"


def _bead_text(n) -> str:
    from convoys.models import Bead

    ref = (n.changes or {}).get("bead") if isinstance(n.changes, dict) else None
    if not ref:
        return ""
    for bead in Bead.objects.filter(rig_id=n.rig_id, discovered_from_merge_request__isnull=False):
        if getattr(bead, "short_id", None) == ref:
            return f"{bead.title}\n{bead.description}"
    return ""


def _named(n) -> str:
    return f"{n.summary}\n{n.action}\n{_bead_text(n)}"


def _anywhere(n) -> str:
    return f"{_named(n)}\n{json.dumps(n.changes, default=str)}"


class Snapshot:
    """What each notice of a repository looked like at one moment, to tell what happened
    since: a notice created, or updated (its occurrences went up: revised in place, or an
    identical one merged into it). A notice only resolved or acknowledged was not "told"."""

    def __init__(self, repository_id: int, rig_ids: list[int] | None = None) -> None:
        from notifications.models import Notification

        qs = Notification.objects.filter(rig__repository_id=repository_id)
        if rig_ids is not None:
            qs = qs.filter(rig_id__in=rig_ids)
        self.repository_id = repository_id
        self.rig_ids = rig_ids
        self.has_revisions = "revisions" in _fields()
        self.seen = {
            n.id: (n.occurrences, len(n.revisions) if self.has_revisions else 0) for n in qs
        }

    def told_since(self) -> list:
        """Notices created or updated since the snapshot."""
        from notifications.models import Notification

        qs = Notification.objects.filter(rig__repository_id=self.repository_id).select_related(
            "rig"
        )
        if self.rig_ids is not None:
            qs = qs.filter(rig_id__in=self.rig_ids)
        return [n for n in qs.order_by("id") if n.occurrences > self.seen.get(n.id, (0, 0))[0]]

    def asked_since(self, n) -> bool:
        """Whether a notice told since the snapshot asked for an action at some point since:
        its severity now, or one of its versions made since (kept in `revisions`)."""
        if n.severity in ACTION_SEVERITIES:
            return True
        if not self.has_revisions:
            return False
        known = self.seen.get(n.id)
        since = 0 if known is None else known[1] + 1  # revisions[known] is the version before
        return any(r.get("severity") in ACTION_SEVERITIES for r in n.revisions[since:])


def describe(n) -> str:
    state = getattr(n, "state", "unacked" if n.acked_at is None else "acked")
    return f"#{n.id} {n.rig.slug} [{n.kind}/{n.severity}/{state}] {n.summary[:110]}"


# --- the town: a repository, rigs, agents' commits, syncs and landings on the worker -------------


class Town:
    """One scenario's repository and rigs. Every step that the worker does (provision, sync,
    merge queue, cascade, overlap radar) is asked for, then awaited until the worker is idle."""

    def __init__(self, env, name: str) -> None:
        from django.conf import settings

        from rigs import git as product_git
        from rigs import services

        self.env = env
        self.name = name
        root = Path(settings.GASTOWN_REPOSITORY_ROOTS[0])
        root.mkdir(parents=True, exist_ok=True)
        path = root / f"{name}.git"
        product_git.init_repository(path, initial_branch="main", bare=True)
        tip = product_git.commit_files(path, FILES, "sample app", parent=None)
        product_git.update_ref(path, "refs/heads/main", tip, product_git.ZERO_OID)
        self.path = path
        self.repository = services.repository_register(
            name=name, path=str(path), target_branch="main"
        )
        self.rigs: dict[str, object] = {}
        self.finished: dict[str, Snapshot] = {}
        self.expectations: list[Expect] = []
        self.expected = self.recalled = 0
        self.misses: list[str] = []
        self.stale: list[str] = []
        self.told_at: dict[str, list] = {}
        self.window = Snapshot(self.repository.id)
        self.crowded = 0
        self.crowded_notes: list[str] = []

    # steps
    def idle(self) -> None:
        from events.models import Event

        celery_worker_idle(
            self.env,
            quiet=1.0,
            probe=lambda: Event.objects.order_by("-id").values_list("id", flat=True).first(),
        )

    def rig(self, slug: str, **kw):
        from rigs import services
        from rigs.models import Rig

        rig = services.rig_request(repository=self.repository, slug=slug, **kw)
        deadline = time.monotonic() + 60
        while rig.state not in (Rig.State.READY, Rig.State.FAILED):
            if time.monotonic() > deadline:
                raise RuntimeError(f"rig {slug} was not provisioned in 60 s ({rig.state})")
            time.sleep(0.05)
            rig.refresh_from_db()
        if rig.state != Rig.State.READY:
            raise RuntimeError(f"rig {slug} failed: {rig.failure_reason}")
        self.rigs[slug] = rig
        return rig

    def rigs_up(self, specs: dict[str, dict]) -> None:
        for slug, kw in specs.items():
            self.rig(slug, **kw)
        self.idle()

    def commit(self, slug: str, files: dict[str, str], message: str = "") -> str:
        rig = self.rigs[slug]
        worktree = Path(rig.worktree_path)
        for path, text in files.items():
            target = worktree / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        git(worktree, "add", "-A")
        git(worktree, "commit", "-q", "-m", message or f"{slug}: {', '.join(files)}")
        return git(worktree, "rev-parse", "HEAD")

    def sync(self, *slugs: str) -> None:
        from rigs import services

        for slug in slugs:
            rig = self.rigs[slug]
            head = git(Path(rig.worktree_path), "rev-parse", "HEAD")
            services.rig_sync_request(rig=rig)
            deadline = time.monotonic() + 60
            while True:
                rig.refresh_from_db()
                if rig.head_commit == head:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"rig {slug} did not sync in 60 s")
                time.sleep(0.05)
            self.idle()

    def work(self, slug: str, files: dict[str, str], message: str = "") -> None:
        self.commit(slug, files, message)
        self.sync(slug)

    def land(self, slug: str) -> None:
        from convoys.services import rig_merge_request
        from rigs.models import MergeRequest

        rig = self.rigs[slug]
        mr = rig_merge_request(rig=rig, requested_by="bench")
        deadline = time.monotonic() + 120
        while mr.state in MergeRequest.ACTIVE_STATES:
            if time.monotonic() > deadline:
                raise RuntimeError(f"merge request of {slug} still {mr.state} after 120 s")
            time.sleep(0.05)
            mr.refresh_from_db()
        if mr.state != MergeRequest.State.MERGED:
            raise RuntimeError(f"merge request of {slug} ended {mr.state}: {mr.reason}")
        # From now on the rig's work is done: it must be told nothing more.
        self.finished[slug] = Snapshot(self.repository.id, rig_ids=[rig.id])
        self.idle()
        rig.refresh_from_db()

    def convoy(self, title: str, legs: list[dict]):
        from convoys import services as convoys

        for leg in legs:
            leg["rig"] = self.rigs[leg["rig"]]
        convoy = convoys.convoy_create(title=title, repository=self.repository, legs=legs)
        convoys.convoy_launch(convoy=convoy)
        self.idle()
        return convoy

    def start_window(self) -> None:
        """What happens from now on is measured (precision, finished rigs)."""
        self.window = Snapshot(self.repository.id)

    # measurement
    def check(self, label: str, expectations: list[Expect], gone: tuple[Gone, ...] = ()) -> None:
        """Recall now: each expected rig holds an open notice, told since the window opened,
        of an expected kind, naming the files and symbols. `gone`: notices that must no
        longer be open (their cause is over)."""
        from notifications.models import Notification

        told = self.window.told_since()
        self.expectations += expectations
        self.told_at[label] = told
        for e in expectations:
            self.expected += 1
            rig = self.rigs[e.rig]
            hits = [n for n in told if n.rig_id == rig.id and n.kind in e.kinds and _is_open(n)]
            good = [
                n
                for n in hits
                if all(f in _anywhere(n) for f in e.files)
                and all(s in _named(n) for s in e.symbols)
            ]
            if good:
                self.recalled += 1
                continue
            why = (
                f"told [{'; '.join(describe(n) for n in hits)}] without naming "
                f"{[*e.files, *e.symbols]}"
                if hits
                else "not told"
            )
            others = [describe(n) for n in told if n.rig_id == rig.id and n not in hits]
            self.misses.append(
                f"{label}: {e.label()} {why}"
                + (f"; it got [{'; '.join(others)}]" if others else "")
            )
        for g in gone:
            rig = self.rigs[g.rig]
            notes = Notification.objects.filter(rig=rig).select_related("rig")
            if g.kinds:
                notes = notes.filter(kind__in=g.kinds)
            if g.about:
                other = self.rigs[g.about].id
                notes = [
                    n
                    for n in notes
                    if getattr(n, "topic", "") == f"overlap:{other}" or n.source_rig_id == other
                ]
            stale = [n for n in notes if _is_open(n)]
            self.stale += [f"{label}: {g.why}: {describe(n)}" for n in stale]
        self._crowding(label)

    def _crowding(self, label: str) -> None:
        from notifications.models import Notification

        counts = Counter(
            (n.rig.slug, _cause(n))
            for n in Notification.objects.filter(rig__repository=self.repository).select_related(
                "rig"
            )
            if _is_open(n)
        )
        for (slug, cause), count in counts.items():
            if count > GOAL_OPEN_PER_CAUSE:
                self.crowded_notes.append(f"{label}: {slug} holds {count} open on {cause}")
        self.crowded = max([self.crowded, *counts.values()])

    def result(self, name: str) -> Result:
        result = Result(
            name,
            expected=self.expected,
            recalled=self.recalled,
            misses=self.misses,
            stale=self.stale,
        )
        wanted = defaultdict(set)
        for e in self.expectations:
            wanted[self.rigs[e.rig].id].update(e.kinds)
        for n in self.window.told_since():
            result.told.append(describe(n))
            if self.window.asked_since(n):
                result.asked += 1
                if n.kind in wanted.get(n.rig_id, ()):
                    result.needed += 1
                else:
                    result.unneeded.append(describe(n))
        result.open_per_cause = self.crowded
        result.crowded = self.crowded_notes
        for snapshot in self.finished.values():
            for n in snapshot.told_since():
                result.finished_told += 1
                result.finished.append(describe(n))
        return result


# --- the scenarios --------------------------------------------------------------------------------


def scenario_auth_convoy(town: Town) -> None:
    """The article: five rigs build sign-in; the API rig changes the token format."""
    town.rigs_up(
        {
            "api": {"scope": ["auth/**"], "role": "api"},
            "frontend": {"scope": ["frontend/**"], "watch": ["auth/tokens.py"]},
            "tests": {"scope": ["tests/**"], "watch": ["auth/**"], "role": "tests"},
            "docs": {"scope": ["docs/**"], "role": "docs"},
            "deploy": {"scope": ["deploy/**"], "role": "deploy"},
        }
    )
    town.convoy(
        "Build the authentication system",
        [
            {"key": key, "title": key, "rig": key, "scope": town.rigs[key].scope}
            for key in ("api", "frontend", "tests", "docs", "deploy")
        ],
    )
    town.work("frontend", {"frontend/session.js": "export const session = {}\n"})
    town.work("tests", {"tests/test_routes.py": "def test_login():\n    assert True\n"})
    town.work("docs", {"docs/login.md": "# Signing in\n"})
    town.work("deploy", {"deploy/Dockerfile": "FROM python:3.12-slim\n"})
    town.start_window()
    town.work("api", {"auth/tokens.py": TOKENS_V2}, "api: sign tokens (format v2)")
    town.land("api")
    symbols = ("make_token", "parse_token")
    town.check(
        "after api landed",
        [
            Expect("frontend", ("interface_changed",), ("auth/tokens.py",), symbols),
            Expect("tests", ("interface_changed", "assigned"), ("auth/tokens.py",), symbols),
            Expect("docs", ("interface_changed", "assigned"), ("auth/tokens.py",), symbols),
        ],
    )


def scenario_shared_module(town: Town) -> None:
    """Six rigs at work; two watch the shared module that two others change, one after the
    other."""
    specs = {"core": {"scope": ["shared/**"]}, "core2": {"scope": ["shared/**"]}}
    specs["w1"] = {"watch": ["shared/utils.py"]}
    specs["w2"] = {"watch": ["shared/**"]}
    specs |= {f"o{i}": {} for i in range(1, 5)}
    town.rigs_up(specs)
    for slug in ("w1", "w2", "o1", "o2", "o3", "o4"):
        town.work(slug, {f"app/{slug}.py": f"NAME = {slug!r}\n"})
    town.start_window()
    town.work("core", {"shared/utils.py": UTILS_V2}, "core: slugify keeps only letters, digits")
    town.land("core")
    town.check(
        "after core landed",
        [
            Expect(w, ("interface_changed",), ("shared/utils.py",), ("slugify",))
            for w in ("w1", "w2")
        ],
    )
    # A second change to the module: the watchers' one notice now names both changes.
    town.work("core2", {"shared/utils.py": UTILS + TRUNCATE}, "core2: truncate")
    town.land("core2")
    town.check(
        "after core2 landed",
        [
            Expect(w, ("interface_changed",), ("shared/utils.py",), ("slugify", "truncate"))
            for w in ("w1", "w2")
        ],
    )


def scenario_manifest(town: Town) -> None:
    """requirements.txt changes: every live rig must reinstall."""
    town.rigs_up({slug: {} for slug in ("deps", "r1", "r2", "r3", "r4")})
    for slug in ("r1", "r2", "r3", "r4"):
        town.work(slug, {f"app/{slug}.py": f"NAME = {slug!r}\n"})
    town.start_window()
    town.work("deps", {"requirements.txt": "django==5.2\nrequests==2.32.3\n"}, "deps: requests")
    town.land("deps")
    town.check(
        "after deps landed",
        [
            Expect(slug, ("dependencies_changed",), ("requirements.txt",))
            for slug in ("r1", "r2", "r3", "r4")
        ],
    )


def scenario_same_file(town: Town) -> None:
    """a and b rewrite the same lines of app/models.py, c edits it elsewhere; a lands first."""
    town.rigs_up({slug: {"scope": ["app/**"]} for slug in ("a", "b", "c")})
    town.start_window()
    town.work("a", {"app/models.py": MODELS_A}, "a: price with a 25% margin")
    town.work("b", {"app/models.py": MODELS_B}, "b: price with tax")
    town.work("c", {"app/models.py": MODELS_C}, "c: label shows the sku")
    town.check(
        "before a lands (overlap radar)",
        [
            Expect("a", ("overlap",), ("app/models.py",)),
            Expect("b", ("overlap",), ("app/models.py",)),
        ],
    )
    town.land("a")
    town.check(
        "after a landed",
        [Expect("b", ("rebase_needed",), ("app/models.py",))],
        gone=(
            Gone("b", ("overlap",), "the overlap with a is over: a landed", about="a"),
            Gone("c", ("overlap",), "the overlap with a is over: a landed", about="a"),
        ),
    )


def scenario_finished(town: Town) -> None:
    """`done` (its convoy leg) and `solo` (no leg) merge; then `src` changes what they watched."""
    town.rigs_up(
        {
            "done": {"watch": ["auth/**"], "scope": ["docs/**"]},
            "solo": {"watch": ["auth/**"]},
            "src": {"scope": ["auth/**"]},
            "live": {"watch": ["auth/**"]},
        }
    )
    town.convoy("Finish first", [{"key": "done", "title": "done", "rig": "done"}])
    town.work("done", {"docs/done.md": "done\n"})
    town.work("solo", {"notes/solo.md": "solo\n"})
    town.work("live", {"app/live.py": "LIVE = True\n"})
    town.start_window()
    town.land("done")
    town.land("solo")
    town.work(
        "src",
        {"auth/tokens.py": TOKENS_V2, "requirements.txt": "django==5.2\nrequests==2.32.3\n"},
        "src: token format v2, requests",
    )
    town.land("src")
    town.check(
        "after src landed",
        [
            Expect("live", ("interface_changed",), ("auth/tokens.py",), ("make_token",)),
            Expect("live", ("dependencies_changed",), ("requirements.txt",)),
        ],
        gone=(
            Gone("done", (), "its work landed: nothing left to do"),
            Gone("solo", (), "its work landed: nothing left to do"),
        ),
    )


def scenario_rename(town: Town) -> None:
    """fetch_user becomes load_user; two rigs use it (and watch its file), one does not."""
    town.rigs_up(
        {
            "lib": {"scope": ["shared/**"]},
            "u1": {"watch": ["shared/api.py"]},
            "u2": {"watch": ["shared/**"]},
            "other": {},
        }
    )
    call = "from shared.api import fetch_user\n\n\ndef profile(uid):\n    return fetch_user(uid)\n"
    town.work("u1", {"app/views.py": call})
    town.work("u2", {"app/jobs.py": call.replace("profile", "nightly")})
    town.work("other", {"app/other.py": "OTHER = 1\n"})
    town.start_window()
    town.work("lib", {"shared/api.py": API_RENAMED}, "lib: rename fetch_user to load_user")
    town.land("lib")
    town.check(
        "after lib landed",
        [
            Expect(u, ("interface_changed",), ("shared/api.py",), ("fetch_user", "load_user"))
            for u in ("u1", "u2")
        ],
    )


SCENARIOS: dict[str, tuple[str, Callable[[Town], None]]] = {
    "1": ("auth convoy (token format)", scenario_auth_convoy),
    "2": ("shared module, 2 of 6 watch", scenario_shared_module),
    "3": ("dependency manifest", scenario_manifest),
    "4": ("same file, one lands first", scenario_same_file),
    "5": ("rigs finished before", scenario_finished),
    "6": ("public function renamed", scenario_rename),
}


def run_scenarios(env, keys: list[str], verbose: bool) -> list[Result]:
    results = []
    with celery_worker_process(env, concurrency=2):
        for key in keys:
            title, run = SCENARIOS[key]
            name = f"{key}. {title}"
            started = time.perf_counter()
            town = None
            try:
                town = Town(env, f"signal-{key}")
                run(town)
                result = town.result(name)
            except Exception as exc:  # noted, and the next scenario runs
                result = town.result(name) if town is not None else Result(name)
                result.error = f"{type(exc).__name__}: {exc}"
                if verbose:
                    traceback.print_exc()
            seconds = time.perf_counter() - started
            error = f"  ERROR {result.error}" if result.error else ""
            print(f"scenario {name}: {seconds:.1f}s{error}")
            results.append(result)
    return results


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.0f}%"


def report_scenarios(results: list[Result], verbose: bool) -> bool:
    rows = []
    ok = True
    for r in results:
        goals = r.goals()
        ok &= all(goals.values())
        missed = [name for name, met in goals.items() if not met]
        rows.append(
            [
                r.name,
                f"{r.recalled}/{r.expected}",
                _pct(r.recall),
                f"{r.needed}/{r.asked}",
                _pct(r.precision),
                r.open_per_cause,
                r.finished_told,
                "ERROR" if r.error else ("met" if not missed else "MISSED: " + ", ".join(missed)),
            ]
        )
    print()
    print(
        table(
            [
                "scenario",
                "told/must act",
                "recall",
                "needed/asked",
                "precision",
                "max open per rig+cause",
                "to finished rigs",
                "goals",
            ],
            rows,
        )
    )
    print(
        f"goals: recall {GOAL_RECALL:.0%}, precision >= {GOAL_PRECISION:.0%}, open per rig and "
        f"cause <= {GOAL_OPEN_PER_CAUSE}, notices to finished rigs {GOAL_FINISHED}"
    )
    for r in results:
        details = (
            ([f"error: {r.error}"] if r.error else [])
            + [f"missed: {m}" for m in r.misses]
            + [f"not needed: {u}" for u in r.unneeded]
            + [f"crowded: {c}" for c in r.crowded]
            + [f"told after it finished: {f}" for f in r.finished]
            + [f"stale (not a goal): {x}" for x in r.stale]
            + ([f"told: {t}" for t in r.told] if verbose else [])
        )
        if details:
            print(f"\n{r.name}:")
            for line in details:
                print(f"  - {line}")
    return ok


# --- the demo ------------------------------------------------------------------------------------


def _runs_kill(run_ids: list[int]) -> None:
    """Kill every process of the demo's agent runs (started by this benchmark's worker)."""
    from common import process

    for run_id in run_ids:
        for pid in process.run_processes(run_id):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def run_demo(env, pace: float, timeout: float) -> bool:
    from django.conf import settings

    from bench.cascade import asgi_server
    from convoys.models import Convoy
    from demo import seed
    from events.models import Event
    from notifications.models import Notification
    from runner.models import AgentRun

    env.worker_env.update(
        {"GASTOWN_SSL_REDIRECT": "0", "GASTOWN_SECURE_COOKIES": "0", "GASTOWN_HSTS_SECONDS": "0"}
    )
    has_state = "state" in _fields()
    with asgi_server(env) as port:
        url = f"http://127.0.0.1:{port}"
        env.worker_env["GASTOWN_URL"] = url
        os.environ["GASTOWN_URL"] = url
        settings.GASTOWN_URL = url
        beat = ("--beat", "--schedule", str(env.data_dir / "beat-schedule"))
        with celery_worker_process(env, concurrency=2, extra_args=beat):
            started = time.perf_counter()
            convoy = seed.demo_seed(pace=pace)
            legs = {leg.rig_id: leg.key for leg in convoy.legs.all()}
            peak_open: Counter = Counter()  # per rig
            peak_total = peak_asking = 0
            deadline = time.monotonic() + timeout
            while True:
                convoy.refresh_from_db()
                legs = {leg.rig_id: leg.key for leg in convoy.legs.all() if leg.rig_id}
                notes = list(Notification.objects.filter(rig__repository=convoy.repository))
                open_now = [n for n in notes if _is_open(n)]
                per_rig = Counter(n.rig_id for n in open_now)
                for rig_id, count in per_rig.items():
                    peak_open[rig_id] = max(peak_open[rig_id], count)
                peak_total = max(peak_total, len(open_now))
                asking = sum(1 for n in open_now if n.severity in ACTION_SEVERITIES)
                peak_asking = max(peak_asking, asking)
                if convoy.state in (Convoy.State.LANDED, Convoy.State.CANCELLED):
                    break
                if time.monotonic() > deadline:
                    break
                time.sleep(0.25)
            landed_after = time.perf_counter() - started
            state = convoy.state
            run_ids = list(
                AgentRun.objects.filter(rig__repository=convoy.repository).values_list(
                    "id", flat=True
                )
            )
            with contextlib.suppress(RuntimeError):  # the runs wind down, then the count
                end = time.monotonic() + 60
                while AgentRun.objects.filter(
                    id__in=run_ids, state__in=AgentRun.ACTIVE_STATES
                ).exists():
                    if time.monotonic() > end:
                        raise RuntimeError("agent runs still active")
                    time.sleep(0.5)
                time.sleep(3)  # the last cascades of the last landing
            _runs_kill(run_ids)
    print(
        f"\ndemo convoy '{convoy.title}': {state} after {landed_after:.0f}s "
        f"(scripted agents, pace {pace:g}s)"
    )
    from rigs.models import Rig

    notes = list(
        Notification.objects.filter(rig__repository=convoy.repository).select_related("rig")
    )
    # Told after its leg landed: notices created or updated (their events) once it was done.
    told_after: Counter = Counter()
    for leg in convoy.legs.exclude(landed_at=None):
        told_after[leg.rig_id] = Event.objects.filter(
            rig_id=leg.rig_id,
            kind__in=("notification.new", "notification.updated", "notification.repeated"),
            created_at__gt=leg.landed_at,
        ).count()
    by_rig = defaultdict(list)
    for n in notes:
        by_rig[n.rig_id].append(n)
    rows = []
    totals = Counter()
    for rig in Rig.objects.filter(repository=convoy.repository).order_by("id"):
        mine = by_rig.get(rig.id, [])
        counts = {
            "created": len(mine),
            "updated": sum(len(n.revisions) for n in mine) if has_state else 0,
            "bumps": sum(n.occurrences - 1 for n in mine),
            "resolved": sum(1 for n in mine if getattr(n, "state", "") == "resolved"),
            "acknowledged": sum(
                1
                for n in mine
                if (n.state == "acknowledged" if has_state else n.acked_at is not None)
            ),
            "left open": sum(1 for n in mine if _is_open(n)),
            "open asking": sum(1 for n in mine if _is_open(n) and n.severity in ACTION_SEVERITIES),
            "peak open": peak_open.get(rig.id, 0),
            "told after its leg landed": told_after.get(rig.id, 0),
        }
        totals.update(counts)
        rows.append([legs.get(rig.id, rig.slug), *counts.values()])
    headers = ["rig (leg)", *counts.keys()]
    totals["peak open"] = ""  # a peak per rig, at different moments: not summed
    rows.append(["total", *(totals[h] for h in headers[1:])])
    print(table(headers, rows))
    kinds = Counter(n.kind for n in notes)
    print("created by kind: " + ", ".join(f"{k} {v}" for k, v in kinds.most_common()))
    print(
        f"peak while it ran: {peak_total} open notices over the convoy's rigs "
        f"({peak_asking} asking for an action: warning/critical); one inbox at most "
        f"{max(peak_open.values(), default=0)}"
    )
    if not has_state:
        print("(this checkout has no notice states: 'left open' = not acknowledged)")
    return state == Convoy.State.LANDED


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="e.g. 1,4,6")
    parser.add_argument("--no-demo", action="store_true", help="skip the demo convoy")
    parser.add_argument("--demo-only", action="store_true", help="only the demo convoy")
    parser.add_argument("--pace", type=float, default=0.05, help="scripted agents' pause (s)")
    parser.add_argument("--demo-timeout", type=float, default=600.0)
    parser.add_argument("--verbose", action="store_true", help="tracebacks of failed scenarios")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args()
    keys = [] if args.demo_only else [k.strip() for k in args.scenarios.split(",") if k.strip()]
    unknown = [k for k in keys if k not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; known: {', '.join(SCENARIOS)}")
    os.environ.setdefault("GASTOWN_CHANNEL_PREFIX", f"asgi-bench-{os.getpid()}")

    ok = True
    with bench_environment(prefix="gastown-bench-signal-", keep=args.keep) as env:
        commit = git(Path(__file__).resolve().parent.parent, "rev-parse", "--short", "HEAD")
        print(f"{env.database}; {env.broker}; code at {commit} (+ working tree)")
        if keys:
            results = run_scenarios(env, keys, args.verbose)
            ok &= report_scenarios(results, args.verbose)
        if not args.no_demo or args.demo_only:
            ok &= run_demo(env, args.pace, args.demo_timeout)
        machine = f"{platform.platform()}, {os.cpu_count()} CPUs, {platform.python_version()}"
        print(f"\nmachine: {machine}")
    print("all goals met" if ok else "GOAL MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
