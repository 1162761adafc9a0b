"""What a rig watches and owns: path patterns, and the lists that classify a landed path
(dependency manifests, deployment, docs, tests, code)."""

import fnmatch

from django.db.models import Q

from convoys.models import Leg
from rigs.models import Repository, Rig

MANIFEST_PATTERNS = [
    "requirements*.txt",
    "requirements/*.txt",
    "pyproject.toml",
    "setup.py",
    "setup.cfg",
    "Pipfile",
    "Pipfile.lock",
    "poetry.lock",
    "uv.lock",
    "package.json",
    "package-lock.json",
    "yarn.lock",
    "pnpm-lock.yaml",
    "go.mod",
    "go.sum",
    "Cargo.toml",
    "Cargo.lock",
    "Gemfile",
    "Gemfile.lock",
    "composer.json",
    "composer.lock",
    "pom.xml",
    "build.gradle",
]
DEPLOY_PATTERNS = [
    "Dockerfile",
    "*.Dockerfile",
    "docker-compose*.yml",
    "docker-compose*.yaml",
    ".github/**",
    ".gitlab-ci.yml",
    ".ci/**",
    "deploy/**",
    "infra/**",
    "k8s/**",
    "helm/**",
    "*.tf",
    "Procfile",
    "Makefile",
]
DOC_PATTERNS = ["docs/**", "doc/**", "*.md", "*.rst"]
TEST_PATTERNS = [
    "tests/**",
    "test/**",
    "**/tests/**",
    "test_*.py",
    "**/test_*.py",
    "*_test.py",
    "**/*_test.py",
    "**/*.test.js",
    "**/*.spec.ts",
    "*_test.go",
    "**/*_test.go",
]
CODE_SUFFIXES = (
    ".py",
    ".js",
    ".ts",
    ".tsx",
    ".jsx",
    ".go",
    ".rs",
    ".java",
    ".rb",
    ".php",
    ".c",
    ".h",
    ".cc",
    ".cpp",
    ".kt",
    ".swift",
    ".cs",
)


def path_matches(path: str, patterns: list[str]) -> bool:
    """Glob match where `**` spans directories and a bare name matches at any depth."""
    for pattern in patterns:
        if fnmatch.fnmatchcase(path, pattern):
            return True
        if pattern.endswith("/**") and (path + "/").startswith(pattern[:-2]):
            return True
        if "/" not in pattern and fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern):
            return True
        if pattern.startswith("**/") and path_matches(path, [pattern[3:]]):
            return True
    return False


def rig_watch_patterns(rig: Rig, leg: Leg | None) -> list[str]:
    """What a rig watches: its own watch globs plus the scope of every leg its leg depends on."""
    patterns = list(rig.watch)
    if leg is not None:
        for dependency in leg.depends_on.all():
            patterns.extend(dependency.scope)
    return patterns


def rig_owns(rig: Rig, leg: Leg | None, role: str, patterns: list[str]) -> bool:
    """Whether a rig owns an area: its declared role, else its scope covers the area."""
    if rig.role:
        return rig.role == role
    scope = list(rig.scope) + (list(leg.scope) if leg is not None else [])
    return any(path_matches(glob.rstrip("*").rstrip("/") or glob, patterns) for glob in scope)


def rigs_watching(repository: Repository, paths: list[str]) -> list[Rig]:
    """Live rigs whose watch patterns match any of `paths` (for dashboards and tests)."""
    result = []
    for rig in Rig.objects.filter(repository=repository, state__in=Rig.LIVE_STATES).filter(
        ~Q(watch=[])
    ):
        if any(path_matches(p, rig.watch) for p in paths):
            result.append(rig)
    return result
