"""The house rules, read from the imports (standard library `ast`; no code is run):

- layers: an app imports only the apps below it (common < events < rigs < notifications <
  convoys < cascades < runner < audit < backups < metrics < demo < board); nothing imports `board`,
  `metrics` or `demo` but the URL conf and the launcher;
- only `rigs/git/run.py` reaches git (GitPython), only `common/process.py` starts or kills
  processes (the dev launcher and the embedded Redis excepted);
- no import circle between the modules of one app (module-level imports; an import inside a
  function is how a task reaches its service, one way).

Each rule is a function that returns its violations, and each is also run on a small planted
tree to show that it can fail."""

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ORDER = [
    "common",
    "events",
    "rigs",
    "notifications",
    "convoys",
    "cascades",
    "runner",
    "audit",
    "backups",
    "metrics",
    "demo",
    "board",
]
# Who may import the top layers anyway (URL conf, the dev launcher, demo's own command).
TOP_IMPORTERS = {
    "board": {"gastown_site/urls.py"},
    "metrics": {"gastown_site/urls.py"},
    "demo": {"gastown_site/run.py"},
}
PROCESS_MODULES = {"common/process.py", "gastown_site/run.py", "gastown_site/embedded.py"}
GIT_MODULES = {"rigs/git/run.py"}
PROCESS_CALLS = {
    ("subprocess", "Popen"),
    ("subprocess", "run"),
    ("subprocess", "call"),
    ("subprocess", "check_call"),
    ("subprocess", "check_output"),
    ("os", "kill"),
    ("os", "killpg"),
    ("os", "system"),
    ("os", "popen"),
}


def source_files(root: Path) -> list[Path]:
    apps = [*ORDER, "gastown_site"]
    return sorted(
        p
        for app in apps
        if (root / app).is_dir()
        for p in (root / app).rglob("*.py")
        if "migrations" not in p.parts
    )


def rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def imports(path: Path, *, top_level_only: bool = False) -> list[str]:
    """Absolute module names `path` imports (module-level only when asked)."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # also imports under a module-level `if`/`try`
        nodes = [n for top in tree.body for n in _top_level(top)]
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found += [f"{node.module}.{alias.name}" for alias in node.names]
    return found


def _top_level(node: ast.AST):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
        return
    yield node
    for child in ast.iter_child_nodes(node):
        yield from _top_level(child)


def app_of(module: str) -> str:
    return module.split(".")[0]


def layer_violations(root: Path) -> list[str]:
    bad = []
    for path in source_files(root):
        name = rel(root, path)
        own = app_of(name.replace("/", "."))
        for module in imports(path):
            other = app_of(module)
            if other == own or other not in ORDER:
                continue
            if other in TOP_IMPORTERS and name not in TOP_IMPORTERS[other]:
                bad.append(f"{name} imports {module}: nothing imports {other}")
            elif own in ORDER and ORDER.index(other) > ORDER.index(own):
                bad.append(f"{name} imports {module}: {own} sits below {other}")
    return sorted(set(bad))


def process_violations(root: Path) -> list[str]:
    bad = []
    for path in source_files(root):
        name = rel(root, path)
        tree = ast.parse(path.read_text(), str(path))
        if name not in GIT_MODULES:
            for module in imports(path):
                if module == "git" or module.startswith("git."):
                    bad.append(f"{name} imports GitPython ({module}): only rigs/git/run.py does")
        if name in PROCESS_MODULES:
            continue
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and (node.func.value.id, node.func.attr) in PROCESS_CALLS
            ):
                call = f"{node.func.value.id}.{node.func.attr}"
                bad.append(f"{name}:{node.lineno} calls {call}: only common/process.py does")
    return sorted(set(bad))


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def cycle_violations(root: Path) -> list[str]:
    """Module-level import circles inside one app."""
    modules = {module_name(root, p): p for p in source_files(root)}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for imported in imports(path, top_level_only=True):
            target = imported if imported in modules else imported.rsplit(".", 1)[0]
            if target in modules and target != name and app_of(target) == app_of(name):
                # a package's __init__ importing its own submodules is how re-exports work
                if name and target.startswith(name + ".") and modules[name].name == "__init__.py":
                    continue
                graph[name].add(target)
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(modules):
        if node not in state:
            visit(node, [])
    return cycles


# --- the rules, on this tree ---------------------------------------------------------------------


def test_each_app_imports_only_the_layers_below_it():
    assert layer_violations(ROOT) == []


def test_only_the_git_and_process_modules_start_processes():
    assert process_violations(ROOT) == []


def test_no_import_circle_inside_an_app():
    assert cycle_violations(ROOT) == []


# --- ... and on planted violations, to show each rule can fail ------------------------------------


@pytest.fixture
def planted(tmp_path: Path):
    def plant(files: dict[str, str]) -> Path:
        for name, text in files.items():
            path = tmp_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return tmp_path

    return plant


def test_a_lower_layer_importing_a_higher_one_is_caught(planted):
    root = planted({"rigs/services.py": "from convoys.models import Convoy\n"})
    assert layer_violations(root) == [
        "rigs/services.py imports convoys.models.Convoy: rigs sits below convoys",
        "rigs/services.py imports convoys.models: rigs sits below convoys",
    ]


def test_notifications_and_convoys_importing_what_sits_above_them_are_caught(planted):
    root = planted(
        {
            "notifications/services.py": "from convoys.selectors import rig_current_leg\n",
            "convoys/services.py": "def f():\n    from cascades import landed\n",
        }
    )
    assert layer_violations(root) == [
        "convoys/services.py imports cascades.landed: convoys sits below cascades",
        "convoys/services.py imports cascades: convoys sits below cascades",
        "notifications/services.py imports convoys.selectors.rig_current_leg: notifications "
        "sits below convoys",
        "notifications/services.py imports convoys.selectors: notifications sits below convoys",
    ]


def test_importing_the_board_is_caught(planted):
    root = planted({"runner/api.py": "def f():\n    from board import pages\n"})
    assert "runner/api.py imports board: nothing imports board" in layer_violations(root)


def test_a_popen_outside_the_process_module_is_caught(planted):
    root = planted({"rigs/merge_queue.py": "import subprocess\nsubprocess.Popen(['sh'])\n"})
    assert process_violations(root) == [
        "rigs/merge_queue.py:2 calls subprocess.Popen: only common/process.py does"
    ]


def test_gitpython_outside_the_git_entry_is_caught(planted):
    root = planted({"cascades/landed.py": "from git import Repo\n"})
    assert process_violations(root)[0].startswith("cascades/landed.py imports GitPython")


def test_an_import_circle_is_caught_but_a_lazy_import_is_not(planted):
    root = planted(
        {
            "rigs/services.py": "from rigs import tasks\n",
            "rigs/tasks.py": "from rigs import services\n",
            "convoys/services.py": "from convoys import tasks\n",
            "convoys/tasks.py": "def run():\n    from convoys import services\n",
        }
    )
    assert cycle_violations(root) == ["rigs.services -> rigs.tasks -> rigs.services"]
