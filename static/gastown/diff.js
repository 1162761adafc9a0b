/* Gas Town: the diff view. The tree is on the page; each file's rows are fetched when its
 * section is opened (server-rendered, highlighted by Pygments), and again after a comment or
 * an event about a review. Folded unchanged lines unfold in place; a line number opens the
 * comment form under its line; the layout (unified or side by side) is remembered. */
(() => {
  "use strict";

  const root = document.getElementById("diff");
  const G = window.GasTown;
  if (!G) return;
  const KEY = "gastown.diff.view";
  let view = (() => {
    try {
      return localStorage.getItem(KEY) === "split" ? "split" : "unified";
    } catch (error) {
      return "unified";
    }
  })();

  function pressed() {
    document.querySelectorAll("[data-diff-view]").forEach((button) => {
      button.setAttribute("aria-pressed", String(button.dataset.diffView === view));
    });
  }

  async function load(details, extra = "") {
    const target = details.querySelector(".diff-body");
    if (!target) return;
    details.dataset.loading = "1";
    try {
      const result = await G.fetchFragment(`${details.dataset.src}&view=${view}${extra}`);
      if (result?.node) {
        G.swap(details.querySelector(".diff-body"), result.node);
        details.dataset.loaded = view;
      }
    } catch (error) {
      target.innerHTML = "";
      const p = document.createElement("p");
      p.className = "warn small";
      p.textContent = `This file could not be read (${error.message}).`;
      target.append(p);
    } finally {
      delete details.dataset.loading;
    }
  }

  function reloadOpen() {
    document.querySelectorAll("details.diff-file[data-loaded]").forEach((d) => load(d));
  }

  if (root) {
    root.addEventListener(
      "toggle",
      (event) => {
        const details = event.target;
        if (details.matches?.("details.diff-file") && details.open && details.dataset.loaded !== view) {
          load(details);
        }
      },
      true,
    );
    root.querySelectorAll("details.diff-file[open]").forEach((d) => load(d));

    root.addEventListener("click", (event) => {
      const open = event.target.closest("[data-open]");
      if (open) {
        const details = document.getElementById(open.dataset.open);
        if (details && !details.open) details.open = true;
        return;
      }
      const unfold = event.target.closest("[data-unfold]");
      if (unfold) {
        const fold = unfold.closest("tbody");
        const hidden = fold.nextElementSibling;
        if (hidden) hidden.hidden = false;
        fold.remove();
        return;
      }
      const full = event.target.closest("[data-full]");
      if (full) {
        event.preventDefault();
        load(full.closest("details.diff-file"), "&full=1");
        return;
      }
      const cancel = event.target.closest("[data-cancel]");
      if (cancel) {
        cancel.closest("tr.comment-row")?.remove();
        return;
      }
      const line = event.target.closest("[data-comment]");
      if (line) openForm(line);
    });
  }

  function openForm(button) {
    const template = document.getElementById("comment-form-tpl");
    const row = button.closest("tr");
    if (!template || !row) return;
    row.parentElement.querySelectorAll("tr.comment-row").forEach((r) => r.remove());
    const details = button.closest("details.diff-file");
    const form = template.content.firstElementChild.cloneNode(true);
    form.elements.path.value = details.dataset.path;
    form.elements.line.value = button.dataset.line;
    form.elements.side.value = button.dataset.side;
    const code = button.dataset.side === "old" ? row.querySelector(".l-del.code, .code") : row.querySelector(".code:last-of-type, .code");
    form.elements.excerpt.value = (code?.textContent || "").replace(/^[ +-]/, "").slice(0, 500);
    const tr = document.createElement("tr");
    tr.className = "comment-row";
    const td = document.createElement("td");
    td.colSpan = row.children.length;
    td.append(form);
    tr.append(td);
    row.after(tr);
    form.querySelector("textarea").focus();
  }

  document.querySelectorAll("[data-diff-view]").forEach((button) => {
    button.addEventListener("click", () => {
      view = button.dataset.diffView;
      try {
        localStorage.setItem(KEY, view);
      } catch (error) {
        /* private mode: the choice lasts this page */
      }
      pressed();
      document.querySelectorAll("details.diff-file[open]").forEach((d) => load(d));
      document.querySelectorAll("details.diff-file:not([open])[data-loaded]").forEach((d) => delete d.dataset.loaded);
    });
  });
  pressed();

  G.onEvent((event) => {
    if (event.kind === "review.comment" || (event.kind === "page.action" && event.ok && String(event.action).startsWith("review"))) {
      reloadOpen();
    }
  });
})();
