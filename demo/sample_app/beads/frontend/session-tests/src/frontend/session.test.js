// Run with: node --test src/frontend/
import { test } from "node:test";
import assert from "node:assert/strict";
import { currentUser, parseToken } from "./session.js";

const stored = (token) => ({ getItem: () => token });

test("reads a v2 token", () => {
  assert.deepEqual(parseToken("v2.ada.2000000000.c0ffee"), { user: "ada", expires: 2000000000 });
});

test("refuses a v1 token", () => {
  assert.equal(parseToken("v1:ada"), null);
});

test("an expired session has no user", () => {
  assert.equal(currentUser(stored("v2.ada.100.c0ffee"), 200), null);
});
