"""rigs.git.commit_files: commits made from text alone, in a bare repository (the demo's seed)."""

from pathlib import Path

import pytest

from rigs import git as g


def test_commit_files_builds_history_in_a_bare_repository(tmp_path: Path) -> None:
    bare = g.init_repository(tmp_path / "app.git", bare=True)
    first = g.commit_files(
        bare, {"README.md": "# app\n", "src/api/tokens.py": "VERSION = 1\n"}, "Initial commit"
    )
    g.update_ref(bare, "refs/heads/main", first, g.ZERO_OID)
    second = g.commit_files(
        bare, {"src/api/tokens.py": "VERSION = 2\n", "docs/index.md": "docs\n"}, "v2", parent=first
    )
    g.update_ref(bare, "refs/heads/main", second, first)

    assert g.run(bare, "ls-tree", "-r", "--name-only", "main").split("\n") == [
        "README.md",
        "docs/index.md",
        "src/api/tokens.py",
    ]
    assert g.run(bare, "show", "main:src/api/tokens.py") == "VERSION = 2"
    assert g.run(bare, "show", "main:README.md") == "# app"  # kept from the parent
    assert g.rev_list(bare, first, "main") == [second]
    assert g.run(bare, "log", "-1", "--format=%s", first) == "Initial commit"
    assert not list(bare.glob("index"))  # the scratch index never touched the repository


@pytest.mark.parametrize(
    "path", ["", "/etc/passwd", "a//b", "a/../b", "./a", ".git/config", "a/", "x\ny", '"q"']
)
def test_commit_files_refuses_unsafe_paths(tmp_path: Path, path: str) -> None:
    bare = g.init_repository(tmp_path / "app.git", bare=True)
    with pytest.raises(g.GitError, match="invalid file path"):
        g.commit_files(bare, {path: "x\n"}, "bad")
