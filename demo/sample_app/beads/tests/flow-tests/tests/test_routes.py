"""The sign-in flow through the routes: log in, then ask who I am."""

import unittest

from src.api.routes import ROUTES


class SignInTests(unittest.TestCase):
    def test_login_then_me(self):
        status, body = ROUTES["/login"]({"user": "ada", "password": "lovelace"})
        self.assertEqual(status, 200)
        status, me = ROUTES["/me"]({"token": body["token"]})
        self.assertEqual((status, me["user"]), (200, "ada"))

    def test_wrong_password_is_refused(self):
        status, _ = ROUTES["/login"]({"user": "ada", "password": "guess"})
        self.assertEqual(status, 401)

    def test_forged_v1_token_is_refused(self):
        status, _ = ROUTES["/me"]({"token": "v1:ada"})
        self.assertEqual(status, 401)


if __name__ == "__main__":
    unittest.main()
