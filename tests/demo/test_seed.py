"""The demo `make run` seeds on an empty database: a real sample repository, five scripted agents,
the article's convoy with its dependency graph, and beads whose scripted changes stay in their
leg's scope and build a sample app that compiles and passes its own tests."""

import io
import re
import shutil
import subprocess
import sys
import tarfile
import types
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from cascades.watch import path_matches, rig_watch_patterns
from convoys import services as convoy_services
from convoys.models import Bead, BeadDependency, Convoy, Leg
from demo import plan, seed
from events.models import Event
from gastown_site import run as run_module
from rigs import services as rig_services
from rigs.models import Agent, Repository

CHANGE = re.compile(
    r"^```gastown-change path=(?P<path>\S+) mode=(?P<mode>write|append)\n(?P<content>.*?)^```$",
    re.M | re.S,
)
LEG_KEYS = ["api", "frontend", "tests", "docs", "deploy"]
SAMPLE_FILES = {
    ".gitignore",
    "README.md",
    "deploy/README.md",
    "docs/index.md",
    "src/api/__init__.py",
    "src/api/routes.py",
    "src/api/tokens.py",
    "src/frontend/login.js",
    "tests/__init__.py",
    "tests/test_tokens.py",
}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def changes(bead: Bead) -> list[tuple[str, str, str]]:
    return [(m["path"], m["mode"], m["content"]) for m in CHANGE.finditer(bead.description)]


@pytest.fixture
def demo_dirs(settings, tmp_path: Path) -> Path:
    """A data dir of this test's own, with the repository roots the default settings derive."""
    settings.DATA_DIR = tmp_path
    settings.GASTOWN_REPOSITORY_ROOTS = [(tmp_path / "repositories").resolve()]
    settings.GASTOWN_WORKTREE_ROOT = (tmp_path / "worktrees").resolve()
    return tmp_path


def legs_of(convoy: Convoy) -> dict[str, Leg]:
    return {leg.key: leg for leg in convoy.legs.select_related("rig", "agent")}


def test_seed_makes_the_sample_repository(db, demo_dirs):
    convoy = seed.demo_seed_if_empty(pace=0.05)

    repository = convoy.repository
    path = demo_dirs / "repositories" / "sample-app.git"
    assert (repository.name, Path(repository.path)) == ("sample-app", path.resolve())
    assert (repository.target_branch, repository.gate_command) == ("main", seed.GATE_COMMAND)
    assert git(path, "rev-parse", "--is-bare-repository") == "true"
    assert set(git(path, "ls-tree", "-r", "--name-only", "main").splitlines()) == SAMPLE_FILES
    assert len(git(path, "log", "--format=%s", "main").splitlines()) == 2
    tokens = git(path, "show", "main:src/api/tokens.py")
    assert "def make_token(user: str) -> str:" in tokens and "def parse_token" in tokens
    assert 'PREFIX = "v1"' in tokens
    assert git(path, "symbolic-ref", "HEAD") == "refs/heads/main"


def test_seed_creates_agents_and_the_convoy_graph(db, demo_dirs):
    convoy = seed.demo_seed_if_empty(pace=0.05)

    assert convoy.title == "Build the authentication system"
    assert convoy.state == Convoy.State.LAUNCHED
    legs = legs_of(convoy)
    assert sorted(legs) == sorted(LEG_KEYS)
    graph = {key: sorted(d.key for d in leg.depends_on.all()) for key, leg in legs.items()}
    assert graph == {
        "api": [],
        "frontend": ["api"],
        "tests": ["api"],
        "docs": ["api", "frontend"],
        "deploy": [],
    }
    # wave 1 is handed out at launch; every leg got a rig for its own scripted agent
    assert {k for k, leg in legs.items() if leg.state == Leg.State.READY} == {"api", "deploy"}
    for key, leg in legs.items():
        assert leg.agent.name == f"demo-{key}"
        assert (leg.agent.runtime, leg.agent.runtime_command) == (
            Agent.Runtime.SCRIPTED,
            "gastown-agent --pace 0.05",
        )
        assert leg.rig is not None and leg.rig.agent_id == leg.agent_id
        assert leg.rig.repository_id == convoy.repository_id
    assert Agent.objects.filter(name__startswith="demo-").count() == 5


def test_seed_beads_script_changes_inside_their_leg_scope(db, demo_dirs):
    convoy = seed.demo_seed_if_empty(pace=0.05)

    for key, leg in legs_of(convoy).items():
        beads = list(Bead.objects.filter(leg=leg).order_by("id"))
        assert 2 <= len(beads) <= 3, key
        # launch moved the pool beads into the leg's rig
        assert all(b.rig_id == leg.rig_id and b.status == Bead.Status.OPEN for b in beads)
        assert BeadDependency.objects.filter(bead__leg=leg, depends_on__leg=leg).exists(), key
        for bead in beads:
            found = changes(bead)
            assert found, f"{bead.title}: no gastown-change block"
            for path, _mode, _content in found:
                assert path_matches(path, leg.scope), f"{path} is outside {key}'s {leg.scope}"

    legs = legs_of(convoy)
    api_paths = {p for b in Bead.objects.filter(leg=legs["api"]) for p, _, _ in changes(b)}
    assert "src/api/tokens.py" in api_paths
    # frontend and tests watch the token module the api leg changes: the cascade reaches them
    for key in ("frontend", "tests"):
        leg = legs[key]
        assert path_matches("src/api/tokens.py", rig_watch_patterns(leg.rig, leg))
    assert not path_matches("src/api/tokens.py", rig_watch_patterns(legs["deploy"].rig, None))


def test_scripted_changes_build_an_app_that_passes_the_gate_and_its_tests(db, demo_dirs):
    """Apply every bead's changes, in leg and bead order, to the sample: the result compiles
    (the gate) and its own unit tests pass, with tokens in format v2."""
    convoy = seed.demo_seed_if_empty(pace=0.05, launch=False)
    archive = subprocess.run(
        ["git", "-C", convoy.repository.path, "archive", "main"], check=True, capture_output=True
    ).stdout
    app = demo_dirs / "app"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(app, filter="data")
    v1 = (app / "src/api/tokens.py").read_text()
    for leg in convoy.legs.order_by("position"):
        for bead in Bead.objects.filter(leg=leg).order_by("id"):
            for path, mode, content in changes(bead):
                target = app / path
                target.parent.mkdir(parents=True, exist_ok=True)
                with target.open("a" if mode == "append" else "w") as f:
                    f.write(content)
    v2 = (app / "src/api/tokens.py").read_text()
    assert v1 != v2 and 'VERSION = "v2"' in v2 and "def make_token(user: str, *, now" in v2

    gate = subprocess.run(seed.GATE_COMMAND, shell=True, cwd=app, capture_output=True, text=True)
    assert gate.returncode == 0, gate.stdout + gate.stderr
    unit = subprocess.run(
        [sys.executable, "-m", "unittest", "discover", "-s", "tests", "-t", "."],
        cwd=app,
        capture_output=True,
        text=True,
    )
    assert unit.returncode == 0, unit.stderr
    assert "Ran 7 tests" in unit.stderr
    if shutil.which("node"):
        node = subprocess.run(
            ["node", "--test", "src/frontend/"], cwd=app, capture_output=True, text=True
        )
        assert node.returncode == 0, node.stdout + node.stderr
        assert "# pass 3" in node.stdout, node.stdout
    index = (app / "docs/index.md").read_text()
    assert index.startswith("# sample-app") and "[Tokens](tokens.md)" in index


def test_seed_without_launch_leaves_a_draft_with_pool_beads(db, demo_dirs):
    convoy = seed.demo_seed(pace=0.05, launch=False)

    assert convoy.state == Convoy.State.DRAFT
    assert not convoy.legs.filter(rig__isnull=False).exists()
    assert Bead.objects.filter(convoy=convoy, rig__isnull=True).count() == sum(
        len(leg.beads) for leg in plan.LEGS
    )


def test_seed_if_empty_is_a_no_op_the_second_time(db, demo_dirs):
    assert seed.demo_seed_if_empty(pace=0.05) is not None
    counts = (Repository.objects.count(), Convoy.objects.count(), Bead.objects.count())

    assert seed.demo_seed_if_empty(pace=0.05) is None
    assert (Repository.objects.count(), Convoy.objects.count(), Bead.objects.count()) == counts
    assert not (demo_dirs / "repositories" / "sample-app-2.git").exists()


def test_seed_if_empty_leaves_an_installation_with_a_repository_alone(db, demo_dirs, git_repo):
    rig_services.repository_register(name="mine", path=str(git_repo))

    assert seed.demo_seed_if_empty() is None
    assert not Convoy.objects.exists() and not Agent.objects.exists()


def test_seed_reuses_agents_and_avoids_taken_paths(db, demo_dirs):
    mine, _ = rig_services.agent_create(name="demo-api", runtime="custom", runtime_command="x")
    (demo_dirs / "repositories" / "sample-app.git").mkdir(parents=True)  # left by an old run

    convoy = seed.demo_seed(pace=0.05)
    again = seed.demo_seed(pace=0.05)

    assert legs_of(convoy)["api"].agent == mine
    mine.refresh_from_db()
    assert (mine.runtime, mine.runtime_command) == ("custom", "x")  # not a scripted agent: kept
    assert Agent.objects.filter(name__startswith="demo-").count() == 5
    assert [convoy.repository.name, again.repository.name] == ["sample-app-2", "sample-app-3"]
    assert convoy.slug != again.slug
    assert not any((demo_dirs / "repositories" / "sample-app.git").iterdir())


def test_failed_seed_removes_the_new_repository(db, demo_dirs, monkeypatch):
    def refuse(**kwargs):
        raise RuntimeError("database trouble")

    monkeypatch.setattr(convoy_services, "convoy_create", refuse)
    with pytest.raises(RuntimeError, match="database trouble"):
        seed.demo_seed()

    assert not Repository.objects.exists()
    assert not (demo_dirs / "repositories" / "sample-app.git").exists()


def test_seed_refuses_a_negative_pace(db, demo_dirs):
    with pytest.raises(ValueError, match="pace"):
        seed.demo_seed(pace=-1)
    assert not (demo_dirs / "repositories").exists()


def test_seed_demo_command(db, demo_dirs):
    out = io.StringIO()
    call_command("seed_demo", "--pace", "0.2", "--no-launch", stdout=out)
    convoy = Convoy.objects.get()
    assert convoy.state == Convoy.State.DRAFT
    assert Agent.objects.get(name="demo-docs").runtime_command == "gastown-agent --pace 0.2"
    assert f"git -C {convoy.repository.path} log --oneline --graph" in out.getvalue()

    with pytest.raises(CommandError, match="already has data"):
        call_command("seed_demo", stdout=io.StringIO())
    assert Convoy.objects.count() == 1

    call_command("seed_demo", "--force", stdout=io.StringIO())
    second = Convoy.objects.exclude(pk=convoy.pk).get()
    assert second.state == Convoy.State.LAUNCHED
    assert second.repository.name == "sample-app-2"


def test_seed_demo_force_paces_the_agents_it_reuses(db, demo_dirs):
    def commands() -> set[str]:
        demo_agents = Agent.objects.filter(name__startswith="demo-")
        return set(demo_agents.values_list("runtime_command", flat=True))

    call_command("seed_demo", "--pace", "0.2", "--no-launch", stdout=io.StringIO())
    # without --pace the agents it reuses keep theirs
    call_command("seed_demo", "--force", "--no-launch", stdout=io.StringIO())
    assert commands() == {"gastown-agent --pace 0.2"}
    assert not Event.objects.filter(kind="agent.updated").exists()

    out = io.StringIO()
    call_command("seed_demo", "--force", "--pace", "3", "--no-launch", stdout=out)
    assert commands() == {"gastown-agent --pace 3"}
    assert Agent.objects.filter(name__startswith="demo-").count() == 5
    names = "demo-api, demo-deploy, demo-docs, demo-frontend, demo-tests"
    assert f"Agents {names} run `gastown-agent --pace 3`." in out.getvalue()
    # through the service: an edit like any other, on the event log
    updated = Event.objects.filter(kind="agent.updated")
    assert sorted(e.payload["name"] for e in updated) == names.split(", ")
    assert all(e.payload["fields"] == ["runtime_command"] for e in updated)


def test_seed_demo_force_leaves_a_demo_named_agent_that_is_not_scripted_alone(db, demo_dirs):
    rig_services.agent_create(name="demo-docs", runtime=Agent.Runtime.CLAUDE)
    call_command("seed_demo", "--force", "--pace", "3", "--no-launch", stdout=io.StringIO())
    docs = Agent.objects.get(name="demo-docs")
    assert (docs.runtime, docs.runtime_command) == (Agent.Runtime.CLAUDE, "")
    assert Agent.objects.get(name="demo-api").runtime_command == "gastown-agent --pace 3"


@pytest.mark.parametrize("pace", ["-1", "nan", "inf"])
def test_seed_demo_refuses_a_pace_that_is_not_seconds(db, demo_dirs, pace):
    with pytest.raises(CommandError, match="--pace"):
        call_command("seed_demo", "--pace", pace, stdout=io.StringIO())
    assert not Convoy.objects.exists()


@pytest.mark.parametrize(
    ("no_demo", "environ", "expected"),
    [
        (False, {}, True),
        (False, {"GASTOWN_DEMO": "1"}, True),
        (False, {"GASTOWN_DEMO": "0"}, False),
        (False, {"GASTOWN_DEMO": " Off "}, False),
        (False, {"GASTOWN_DEMO": "false"}, False),
        (True, {}, False),
        (True, {"GASTOWN_DEMO": "1"}, False),
    ],
)
def test_run_decides_whether_to_seed_the_demo(no_demo, environ, expected):
    assert run_module.demo_enabled(no_demo=no_demo, environ=environ) is expected


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8000"),
        ("0.0.0.0", "http://127.0.0.1:8000"),
        ("::", "http://127.0.0.1:8000"),
        ("::1", "http://[::1]:8000"),
        ("gastown.example", "http://gastown.example:8000"),
    ],
)
def test_run_tells_agents_where_the_server_is(host, url):
    assert run_module.public_url(host, "8000") == url


def test_run_seeds_once_and_says_where_to_watch(db, demo_dirs, capsys):
    run_module.demo_seed_on_start()
    line = capsys.readouterr().out
    path = Repository.objects.get().path
    assert line.count("\n") == 1 and f"git -C {path} log --oneline --graph" in line

    run_module.demo_seed_on_start()  # not empty any more: nothing seeded, nothing said
    assert capsys.readouterr().out == ""
    assert Convoy.objects.count() == 1


def test_run_starts_even_when_seeding_fails(db, monkeypatch, caplog):
    def broken(**kwargs):
        raise RuntimeError("no such table")

    monkeypatch.setattr(seed, "demo_seed_if_empty", broken)
    run_module.demo_seed_on_start()
    assert "could not seed the demo" in caplog.text


def test_run_shutdown_stops_agent_runs_and_survives_their_failure(monkeypatch, caplog):
    calls = []
    fake = types.ModuleType("runner.operations")
    fake.agent_runs_shutdown = lambda: calls.append("stopped")
    monkeypatch.setitem(sys.modules, "runner.operations", fake)
    run_module.agent_runs_stop()
    assert calls == ["stopped"]

    def broken():
        raise RuntimeError("database is locked")

    fake.agent_runs_shutdown = broken
    run_module.agent_runs_stop()  # logged, not raised: the rest of the shutdown goes on
    assert "could not stop the agent runs" in caplog.text
