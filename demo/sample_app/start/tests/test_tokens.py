"""Tokens, format v1."""

import unittest

from src.api.tokens import make_token, parse_token


class TokenTests(unittest.TestCase):
    def test_round_trip(self):
        self.assertEqual(parse_token(make_token("ada")), "ada")


if __name__ == "__main__":
    unittest.main()
