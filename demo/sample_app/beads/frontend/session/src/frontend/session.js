// The signed-in session. The API's tokens are format v2: `v2.<user>.<expires>.<signature>`.
const KEY = "session-token";

export function parseToken(token) {
  const [version, user, expires, signature, ...rest] = (token || "").split(".");
  if (version !== "v2" || !user || !signature || rest.length) return null;
  return { user, expires: Number(expires) };
}

export function saveSession(token, storage = window.localStorage) {
  if (!parseToken(token)) throw new Error("unexpected token format");
  storage.setItem(KEY, token);
}

export function currentUser(storage = window.localStorage, now = Date.now() / 1000) {
  const session = parseToken(storage.getItem(KEY));
  return session && session.expires > now ? session.user : null;
}

export function clearSession(storage = window.localStorage) {
  storage.removeItem(KEY);
}
