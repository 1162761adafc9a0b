"""rigs.git bundles (backups): every ref in one file, and a repository made again from it."""

from pathlib import Path

import pytest

from rigs import git as g


def commit(repo: Path, name: str, text: str, message: str) -> str:
    (repo / name).write_text(text)
    g.run(repo, "add", "-A")
    g.run(repo, "commit", "-q", "--no-gpg-sign", "-m", message)
    return g.run(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A checkout on `main`, a rig branch ahead of it (with a worktree), an archive ref, a tag."""
    path = g.init_repository(tmp_path / "app", initial_branch="main")
    commit(path, "README.md", "# app\n", "initial")
    g.run(path, "tag", "v1")
    g.worktree_add(path, tmp_path / "wt" / "api", "rig/api", create_from="main")
    commit(tmp_path / "wt" / "api", "api.py", "x = 1\n", "api")
    g.update_ref(path, "refs/gastown/archive/old/1", g.rev_parse(path, "rig/api"), g.ZERO_OID)
    return path


def test_a_bundle_holds_every_ref_and_a_repository_is_made_again_from_it(repo, tmp_path):
    info = g.bundle_create(repo, tmp_path / "app.bundle")
    assert info.refs == g.refs_all(repo)
    assert set(info.refs) == {
        "refs/heads/main",
        "refs/heads/rig/api",
        "refs/gastown/archive/old/1",
        "refs/tags/v1",
    }
    assert (info.head, info.bare, info.object_format) == ("refs/heads/main", False, "sha1")
    assert g.bundle_list_heads(tmp_path / "app.bundle") == info.refs

    copy = tmp_path / "copy"
    refs = g.repository_from_bundle(copy, tmp_path / "app.bundle", head=info.head, bare=False)
    assert refs == info.refs
    assert (copy / "README.md").read_text() == "# app\n"  # a checkout gets HEAD's files
    assert g.run(copy, "symbolic-ref", "HEAD") == "refs/heads/main"
    assert g.status_porcelain(copy) == []
    assert g.object_exists(copy, info.refs["refs/heads/rig/api"])

    bare = tmp_path / "bare.git"
    g.repository_from_bundle(bare, tmp_path / "app.bundle", head=info.head, bare=True)
    assert g.is_bare(bare) and g.refs_all(bare) == info.refs


def test_an_empty_repository_has_no_bundle_and_comes_back_empty(tmp_path):
    empty = g.init_repository(tmp_path / "empty.git", bare=True)
    info = g.bundle_create(empty, tmp_path / "empty.bundle")
    assert info.refs == {} and not (tmp_path / "empty.bundle").exists()
    again = tmp_path / "again.git"
    assert g.repository_from_bundle(again, None, head=info.head, bare=True) == {}
    assert g.is_repository(again) and g.run(again, "symbolic-ref", "HEAD") == "refs/heads/main"


def test_a_damaged_bundle_or_a_used_path_is_refused(repo, tmp_path):
    bundle = tmp_path / "app.bundle"
    g.bundle_create(repo, bundle)
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the pack
    bundle.write_bytes(bytes(data))
    with pytest.raises(g.GitError):
        g.repository_from_bundle(tmp_path / "copy", bundle, head="refs/heads/main", bare=True)

    used = tmp_path / "used"
    used.mkdir()
    (used / "file").write_text("mine")
    with pytest.raises(g.GitError, match="not empty"):
        g.repository_from_bundle(used, bundle, head="refs/heads/main", bare=True)
    assert (used / "file").read_text() == "mine"


@pytest.mark.parametrize("head", ["HEAD", "refs/heads/../x", "--upload-pack=x", "refs/tags/v1"])
def test_head_must_name_a_branch(tmp_path, head):
    with pytest.raises(g.GitError):
        g.repository_from_bundle(tmp_path / "x", None, head=head, bare=True)
    assert not (tmp_path / "x").exists()


def test_object_exists_takes_only_full_ids(repo):
    assert not g.object_exists(repo, "HEAD")
    assert not g.object_exists(repo, "0" * 40)
    assert g.object_exists(repo, g.rev_parse(repo, "main"))
