"""Tokens, format v2: signed, expiring; v1 is refused."""

import unittest

from src.api.tokens import LIFETIME_SECONDS, make_token, parse_token


class TokenTests(unittest.TestCase):
    def test_round_trip(self):
        claims = parse_token(make_token("ada", now=1000), now=1000)
        self.assertEqual(claims, {"user": "ada", "expires": 1000 + LIFETIME_SECONDS})

    def test_tampered_token_is_refused(self):
        token = make_token("ada", now=1000)
        self.assertIsNone(parse_token(token.replace("ada", "eve"), now=1000))

    def test_expired_token_is_refused(self):
        token = make_token("ada", now=1000)
        self.assertIsNone(parse_token(token, now=1000 + LIFETIME_SECONDS + 1))

    def test_v1_token_is_refused(self):
        self.assertIsNone(parse_token("v1:ada"))


if __name__ == "__main__":
    unittest.main()
