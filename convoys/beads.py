"""Short readable bead ids: `gt-` + base36 characters, longer as the count grows."""

import secrets

from convoys.models import Bead

ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
MIN_LENGTH = 4


def bead_short_id_new() -> str:
    """A fresh id. The length keeps the space at least 100 times the bead count, so a random pick
    rarely collides; a collision is retried (the column is unique anyway)."""
    count = Bead.objects.count()
    length = MIN_LENGTH
    while 36**length < 100 * (count + 1):
        length += 1
    for _ in range(20):
        candidate = "gt-" + "".join(secrets.choice(ALPHABET) for _ in range(length))
        if not Bead.objects.filter(short_id=candidate).exists():
            return candidate
        length += 1
    raise RuntimeError("could not allocate a bead id")
