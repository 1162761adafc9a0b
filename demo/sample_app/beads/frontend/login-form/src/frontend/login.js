// Login page: trades a user name and password for a session token (format v2).
import { saveSession } from "./session.js";

export function renderLogin(root, { fetch = window.fetch, onSignedIn = () => {} } = {}) {
  root.innerHTML = `
    <form class="login">
      <label>User <input name="user" autocomplete="username" required></label>
      <label>Password <input name="password" type="password" required></label>
      <button type="submit">Sign in</button>
      <p class="error" hidden></p>
    </form>`;
  const form = root.querySelector("form");
  const error = form.querySelector(".error");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = JSON.stringify(Object.fromEntries(new FormData(form)));
    const response = await fetch("/login", { method: "POST", body });
    const data = await response.json();
    if (!response.ok) {
      error.textContent = data.error;
      error.hidden = false;
      return;
    }
    saveSession(data.token);
    onSignedIn();
  });
}
