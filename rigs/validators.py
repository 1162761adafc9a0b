"""Validation of user-supplied names that end up in git refs and file paths."""

import re

from django.core.exceptions import ValidationError

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# Branch names: conservative subset of git's rules; git check-ref-format runs too, in rigs.git.
BRANCH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")


def validate_slug(value: str) -> None:
    if not SLUG_RE.fullmatch(value or ""):
        raise ValidationError(
            f"'{value}' is not a valid slug: use 1-63 characters a-z, 0-9 and '-', "
            "starting with a letter or digit.",
            code="invalid_slug",
        )


def validate_branch_name(value: str) -> None:
    problems = []
    if not BRANCH_RE.fullmatch(value or ""):
        problems.append(
            "use letters, digits, '.', '_', '-' and '/', starting with a letter or digit"
        )
    if ".." in value or "//" in value or "@{" in value:
        problems.append("'..', '//' and '@{' are not allowed")
    if value.endswith((".lock", "/", ".")):
        problems.append("it may not end with '.lock', '/' or '.'")
    if any(part.startswith(".") for part in value.split("/")):
        problems.append("no path component may start with '.'")
    if problems:
        raise ValidationError(
            f"'{value}' is not a valid branch name: {'; '.join(problems)}.", code="invalid_branch"
        )


def validate_globs(value: list) -> None:
    """Scope/watch globs: relative paths inside the repository, no escaping it."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError("must be a list of path globs (strings).", code="invalid_globs")
    for glob in value:
        if not glob or glob.startswith(("/", "-", "!")) or ".." in glob.split("/"):
            raise ValidationError(
                f"'{glob}' is not a valid path glob: use a non-empty path relative to the "
                "repository root, without '..', not starting with '/', '-' or '!'.",
                code="invalid_glob",
            )
        if any(ch in glob for ch in "\n\r\0\\"):
            raise ValidationError(
                f"'{glob!r}' contains a forbidden character.", code="invalid_glob"
            )
        if re.search(r"\[(?![^\]]*\])", glob.replace("[[]", "")):
            # fnmatch would read an unclosed '[' as itself: almost always a typo
            raise ValidationError(
                f"'{glob}' has a '[' without its ']': close it, or write '[[]' for a '[' itself.",
                code="invalid_glob",
            )
