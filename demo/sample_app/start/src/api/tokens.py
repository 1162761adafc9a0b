"""Session tokens, format v1: ``v1:<user>``. Unsigned: anyone can forge one (to be replaced)."""

PREFIX = "v1"


def make_token(user: str) -> str:
    """A token naming ``user``."""
    return f"{PREFIX}:{user}"


def parse_token(token: str) -> str | None:
    """The user a token names, or None."""
    prefix, _, user = token.partition(":")
    return user if prefix == PREFIX and user else None
