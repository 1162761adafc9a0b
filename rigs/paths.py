"""Where repositories and worktrees may live: nothing escapes the configured roots."""

from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError


def path_inside_roots(raw: str) -> Path:
    """Resolve `raw` (following symlinks and `..`) and insist it stays under a data root."""
    if not raw or "\0" in raw:
        raise ValidationError({"path": "path is required and must be a plain path."})
    path = Path(raw)
    if not path.is_absolute():
        raise ValidationError({"path": f"'{raw}' must be an absolute path."})
    resolved = path.resolve()
    roots = [Path(r).resolve() for r in settings.GASTOWN_REPOSITORY_ROOTS]
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        raise ValidationError({"path": outside_roots_message(raw, resolved, roots)})
    return resolved


def outside_roots_message(raw: str, resolved: Path, roots: list[Path]) -> str:
    """What the API, the board and `manage.py add_repository` say about a path outside the
    roots: the setting, its value, and how to change it."""
    current = ",".join(str(r) for r in roots)
    return (
        f"'{raw}' resolves to {resolved}, outside the repository roots: "
        f"GASTOWN_REPOSITORY_ROOTS is {current}. To allow it, set GASTOWN_REPOSITORY_ROOTS "
        "(comma-separated folders) in the environment of the server and of manage.py, e.g. "
        f"GASTOWN_REPOSITORY_ROOTS={current},{resolved}, and restart the server."
    )


def looks_like_repository(path: Path) -> bool:
    """A filesystem check (no git process, so it is fine inside a request)."""
    if (path / ".git").exists():
        return True
    return (path / "HEAD").is_file() and (path / "objects").is_dir() and (path / "refs").is_dir()


def git_dir_of(path: Path) -> Path:
    dot_git = path / ".git"
    if dot_git.is_dir():
        return dot_git
    if dot_git.is_file():  # a linked worktree or submodule: "gitdir: <path>"
        target = dot_git.read_text().strip().removeprefix("gitdir:").strip()
        return (path / target).resolve()
    return path


def branch_on_disk(path: Path, branch: str) -> bool:
    """Whether `refs/heads/<branch>` exists, read from loose refs or packed-refs."""
    git_dir = git_dir_of(path)
    common = git_dir
    commondir_file = git_dir / "commondir"
    if commondir_file.is_file():
        common = (git_dir / commondir_file.read_text().strip()).resolve()
    if (common / "refs" / "heads" / branch).is_file():
        return True
    packed = common / "packed-refs"
    if packed.is_file():
        wanted = f" refs/heads/{branch}"
        return any(line.rstrip("\n").endswith(wanted) for line in packed.open())
    return False


def worktree_path_for(repository_name: str, slug: str) -> Path:
    return Path(settings.GASTOWN_WORKTREE_ROOT).resolve() / repository_name / slug


def gate_scratch_dir(repository_name: str) -> Path:
    return Path(settings.GASTOWN_WORKTREE_ROOT).resolve() / ".gates" / repository_name
