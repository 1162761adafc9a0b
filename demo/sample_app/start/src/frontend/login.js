// Login page: a placeholder until the frontend leg builds the form.
export function renderLogin(root) {
  root.textContent = "Sign in (coming soon)";
}
