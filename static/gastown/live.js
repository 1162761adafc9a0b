/* Gas Town: live updates and the page's controls, without a build step.
 *
 * One websocket per page (`/ws/events/?groups=...&after=<id>`), subscribed to the groups in
 * <body data-groups>. Each event makes the page re-fetch the server-rendered fragment it
 * affects and swap it in place: the server stays the one place that renders anything.
 * After a dropped connection the socket reconnects with the last event id it saw, and the
 * server replays what was missed from the event log.
 *
 * Forms marked `data-action` post with fetch (CSRF header, JSON answer) and show the answer
 * as a toast; without JavaScript they post normally and the page shows the same message.
 */
(() => {
  "use strict";

  const body = document.body;
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
  const handlers = [];

  // --- toasts -----------------------------------------------------------------------------
  const toastBox = document.getElementById("toasts");

  function dismissLater(el, ms) {
    setTimeout(() => el.remove(), ms);
  }

  function toast(message, kind = "info") {
    if (!toastBox || !message) return null;
    const el = document.createElement("div");
    el.className = `toast toast-${kind}`;
    el.setAttribute("role", kind === "error" ? "alert" : "status");
    el.textContent = message;
    const close = document.createElement("button");
    close.type = "button";
    close.className = "toast-close";
    close.setAttribute("aria-label", "Dismiss");
    close.textContent = "×";
    el.append(close);
    toastBox.append(el);
    dismissLater(el, kind === "error" ? 12000 : 6000);
    return el;
  }

  document.addEventListener("click", (event) => {
    const close = event.target.closest(".toast-close");
    if (close) close.parentElement.remove();
  });
  toastBox?.querySelectorAll(".toast").forEach((el) => dismissLater(el, 10000));

  // --- writes ---------------------------------------------------------------------------------
  async function post(url, data) {
    let response;
    try {
      response = await fetch(url, {
        method: "POST",
        body: data,
        credentials: "same-origin",
        headers: { "X-CSRFToken": csrf, Accept: "application/json" },
      });
    } catch (error) {
      return { ok: false, status: 0, payload: { error: { message: "The server cannot be reached." } } };
    }
    let payload = {};
    try {
      payload = await response.json();
    } catch (error) {
      payload = { error: { message: `The request failed (HTTP ${response.status}).` } };
    }
    return { ok: response.ok, status: response.status, payload };
  }

  function messageOf(result) {
    return result.ok ? result.payload.message : result.payload.error?.message || "The request failed.";
  }

  document.addEventListener("submit", async (event) => {
    const form = event.target.closest("form[data-action]");
    if (!form) return;
    event.preventDefault();
    const submitter = event.submitter;
    if (submitter?.dataset.confirm && !window.confirm(submitter.dataset.confirm)) return;
    const data = new FormData(form, submitter);
    if (submitter) submitter.disabled = true;
    const result = await post(form.action, data);
    if (submitter?.isConnected) submitter.disabled = false;
    toast(messageOf(result), result.ok ? "success" : "error");
    emit({ kind: "page.action", action: form.dataset.action, ok: result.ok, payload: result.payload });
    refreshSections();
  });

  // --- fragments ------------------------------------------------------------------------------
  async function fetchFragment(url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } });
    if (response.redirected && new URL(response.url).pathname.startsWith("/login")) {
      window.location.reload(); // the session ended: the login page takes over
      return null;
    }
    if (response.status === 204) return { empty: true };
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const template = document.createElement("template");
    template.innerHTML = (await response.text()).trim();
    return { node: template.content.firstElementChild };
  }

  /* Swap `fresh` in for `old`, keeping what the person was doing: each <details> with an id
   * stays open or closed as it was (a feed card closed by hand stays closed), and focus.
   * An element marked `data-keep="<key>"` (a followed log) is carried over into the fresh
   * fragment's element with the same key, with its content and scroll position; it takes the
   * fresh element's attributes. Listeners hear `gastown:swapped` afterwards. */
  function swap(old, fresh) {
    const opened = new Map([...old.querySelectorAll("details[id]")].map((d) => [d.id, d.open]));
    const focusedId = old.contains(document.activeElement) ? document.activeElement.id : "";
    const kept = [];
    fresh.querySelectorAll("[data-keep]").forEach((slot) => {
      const keep = [...old.querySelectorAll("[data-keep]")].find((el) => el.dataset.keep === slot.dataset.keep);
      if (!keep) return;
      for (const { name, value } of [...slot.attributes]) keep.setAttribute(name, value);
      kept.push([keep, keep.scrollTop]);
      slot.replaceWith(keep);
    });
    old.replaceWith(fresh);
    kept.forEach(([el, top]) => {
      el.scrollTop = top;
    });
    opened.forEach((isOpen, id) => {
      const details = document.getElementById(id);
      if (details instanceof HTMLDetailsElement && fresh.contains(details)) details.open = isOpen;
    });
    if (focusedId) document.getElementById(focusedId)?.focus({ preventScroll: true });
    document.dispatchEvent(new CustomEvent("gastown:swapped", { detail: { node: fresh } }));
  }

  const sections = () => [...document.querySelectorAll("[data-live-src]")];
  let sectionTimer = null;
  let sectionBusy = false;
  let sectionAgain = false;

  function refreshSections() {
    if (!sections().length) return;
    clearTimeout(sectionTimer);
    sectionTimer = setTimeout(runSectionRefresh, 120); // one fetch for a burst of events
  }

  async function runSectionRefresh() {
    if (sectionBusy) {
      sectionAgain = true;
      return;
    }
    sectionBusy = true;
    try {
      for (const section of sections()) {
        const result = await fetchFragment(section.dataset.liveSrc);
        const old = section.firstElementChild;
        if (result?.node && old) swap(old, result.node);
      }
      const root = document.querySelector(".live-root[data-groups]");
      if (root && root.dataset.groups !== body.dataset.groups) {
        body.dataset.groups = root.dataset.groups; // e.g. a leg got its rig: listen to it too
        live.resubscribe();
      }
    } catch (error) {
      console.warn("live refresh failed", error);
    } finally {
      sectionBusy = false;
      if (sectionAgain) {
        sectionAgain = false;
        refreshSections();
      }
    }
  }

  // --- the socket -------------------------------------------------------------------------------
  // Ids come from the database at insert, rows become visible at commit: a slow transaction
  // can commit an id lower than one already seen. Reconnects ask for a few ids back, and the
  // ids already handled are skipped.
  const OVERLAP = 20;
  const SEEN_MAX = 2000;

  const live = {
    socket: null,
    lastId: Number(body.dataset.lastEvent || 0),
    state: "connecting",
    seen: new Set(),
    retries: 0,
    timer: null,

    setState(state) {
      this.state = state;
      const indicator = document.getElementById("live-indicator");
      if (!indicator) return;
      indicator.dataset.state = state;
      indicator.textContent = { live: "Live", connecting: "Connecting…", reconnecting: "Reconnecting…", offline: "Offline" }[state] || state;
      indicator.title = state === "live" ? `Live: updates appear as they happen (last event #${this.lastId})` : "Updates are paused; missed ones are replayed on reconnect";
    },

    connect() {
      if (!body.dataset.groups) return;
      clearTimeout(this.timer);
      const scheme = window.location.protocol === "https:" ? "wss" : "ws";
      const after = Math.max(0, this.lastId - OVERLAP);
      const url = `${scheme}://${window.location.host}/ws/events/?groups=${encodeURIComponent(body.dataset.groups)}&after=${after}`;
      const socket = new WebSocket(url);
      this.socket = socket;
      socket.addEventListener("message", (message) => {
        if (socket !== this.socket) return;
        let data;
        try {
          data = JSON.parse(message.data);
        } catch (error) {
          return;
        }
        if (data.type === "ready") {
          this.retries = 0;
          this.setState("live");
        } else if (data.type === "event") {
          this.handle(data.event);
        }
      });
      socket.addEventListener("close", (event) => {
        if (socket !== this.socket) return;
        this.socket = null;
        if (event.code === 4401) {
          window.location.href = `/login/?next=${encodeURIComponent(window.location.pathname)}`;
          return;
        }
        this.setState("reconnecting");
        const delay = Math.min(10000, 500 * 2 ** this.retries) * (0.75 + Math.random() / 2);
        this.retries += 1;
        this.timer = setTimeout(() => this.connect(), delay);
      });
    },

    resubscribe() {
      const old = this.socket;
      this.socket = null;
      old?.close();
      this.connect();
    },

    handle(event) {
      if (this.seen.has(event.id)) return;
      this.seen.add(event.id);
      if (this.seen.size > SEEN_MAX) this.seen.delete(this.seen.values().next().value);
      this.lastId = Math.max(this.lastId, event.id);
      body.dataset.lastEvent = String(this.lastId);
      emit(event);
    },
  };

  function emit(event) {
    for (const handler of handlers) {
      try {
        handler(event);
      } catch (error) {
        console.error(error);
      }
    }
    if (!event.kind.startsWith("page.")) refreshSections();
  }

  // A tab coming back or the network returning: reconnect now instead of after the back-off.
  function reconnectNow() {
    if (body.dataset.groups && !live.socket) live.connect();
  }
  window.addEventListener("online", reconnectNow);
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") reconnectNow();
  });

  window.GasTown = {
    toast,
    post,
    messageOf,
    fetchFragment,
    swap,
    live,
    onEvent(handler) {
      handlers.push(handler);
    },
  };

  document.addEventListener("DOMContentLoaded", () => live.connect());
})();
