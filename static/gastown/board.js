/* The board: cards move between columns (drag, or the card's Move menu), filters, live cards;
 * and the new-convoy form's "add a leg" button. Needs live.js (window.GasTown). */
(() => {
  "use strict";

  const G = window.GasTown;

  // --- the new-convoy form ----------------------------------------------------------------------
  const addLeg = document.getElementById("add-leg");
  if (addLeg) {
    addLeg.hidden = false;
    addLeg.addEventListener("click", () => {
      const rows = document.querySelectorAll("[data-leg-row]");
      const last = rows[rows.length - 1];
      const fresh = last.cloneNode(true);
      const n = rows.length + 1;
      fresh.querySelectorAll(".field-error").forEach((el) => el.remove());
      fresh.querySelectorAll(".has-error").forEach((el) => el.classList.remove("has-error"));
      fresh.querySelectorAll("input, select, textarea").forEach((input) => {
        input.value = "";
        input.removeAttribute("aria-invalid");
        input.id = input.id.replace(/-\d+$/, `-${n}`);
      });
      fresh.querySelectorAll("label").forEach((label) => {
        label.htmlFor = label.htmlFor.replace(/-\d+$/, `-${n}`);
        label.textContent = label.textContent.replace(/Leg \d+/, `Leg ${n}`);
      });
      last.after(fresh);
      fresh.querySelector("input")?.focus();
    });
  }

  const board = document.getElementById("board");
  if (!board) return;

  const columnsSrc = board.dataset.columnsSrc;
  const filters = document.getElementById("filters");
  const query = () => document.getElementById("columns")?.dataset.query || "";
  const cardUrl = (id) => `${board.dataset.cardSrc}${id}/${query() ? `?${query()}` : ""}`;
  const column = (state) => board.querySelector(`.cards[data-column="${state}"]`);

  function recount() {
    board.querySelectorAll(".cards[data-column]").forEach((list) => {
      const count = board.querySelector(`[data-count-for="${list.dataset.column}"]`);
      if (count) count.textContent = list.querySelectorAll(".card").length;
    });
  }

  /* Put a freshly rendered card where its state says, or drop it when the filters hide it. */
  function place(id, result) {
    const copies = [...board.querySelectorAll(`.cards .card[data-convoy="${id}"]`)];
    const card = result && !result.empty ? result.node : null;
    const target = card ? column(card.dataset.state) : null;
    const keep = copies.find((el) => el.parentElement === target);
    copies.filter((el) => el !== keep).forEach((el) => el.remove());
    if (!card || !target) return null; // gone, filtered out, or its column is hidden (cancelled)
    if (keep) {
      G.swap(keep, card);
    } else {
      target.prepend(card);
      card.classList.add("flash");
    }
    return card;
  }

  async function refreshCard(id, force = false) {
    let card = null;
    try {
      const result = await G.fetchFragment(cardUrl(id));
      if (busy.has(id) && !force) {
        pending.add(id); // picked up by a drag meanwhile: settle() refreshes it after
        return null;
      }
      card = place(id, result);
    } catch (error) {
      console.warn("card refresh failed", id, error);
    }
    recount();
    return card;
  }

  async function refreshColumns(url = `${columnsSrc}${query() ? `?${query()}` : ""}`) {
    const result = await G.fetchFragment(url);
    const old = document.getElementById("columns");
    if (result?.node && old) {
      G.swap(old, result.node);
      enableDrag();
      recount();
    }
  }

  // --- live -------------------------------------------------------------------------------------
  // Events in a burst (a merge lands: legs, rigs, the convoy, notifications) become one fetch
  // per card, or one fetch of the columns when many cards changed.
  const pending = new Set();
  // Cards being dragged or moved: their refresh waits until the move is answered.
  const busy = new Set();
  let timer = null;
  const MANY = 25;

  G.onEvent((event) => {
    if (event.kind.startsWith("page.")) return;
    if (event.convoy) {
      pending.add(String(event.convoy));
    } else if (event.rig) {
      board.querySelectorAll(".card[data-rigs]").forEach((card) => {
        if (card.dataset.rigs.split(" ").includes(String(event.rig))) pending.add(card.dataset.convoy);
      });
    }
    if (!pending.size) return;
    clearTimeout(timer);
    timer = setTimeout(flush, 100);
  });

  function flush() {
    const ids = [...pending].filter((id) => !busy.has(id));
    ids.forEach((id) => pending.delete(id));
    if (ids.length > MANY) refreshColumns();
    else ids.forEach(refreshCard);
  }

  function settle(id) {
    busy.delete(id);
    pending.delete(id);
    return refreshCard(id, true); // converge on what the server says
  }

  // --- moving cards -------------------------------------------------------------------------------
  function refuse(card, message) {
    G.toast(message, "error");
    card.querySelector(".card-refusal")?.remove();
    const note = document.createElement("p");
    note.className = "card-refusal";
    note.setAttribute("role", "alert");
    note.textContent = message;
    card.append(note);
    card.classList.remove("shake");
    void card.offsetWidth; // restart the animation
    card.classList.add("shake");
    setTimeout(() => note.remove(), 8000);
  }

  async function move(card, to) {
    const data = new FormData();
    data.append("to", to);
    const result = await G.post(`${board.dataset.moveSrc}${card.dataset.convoy}/move/`, data);
    if (result.ok) G.toast(result.payload.message, "success");
    return result;
  }

  // The card's Move menu (keyboard and touch): the same endpoint as a drag.
  board.addEventListener("submit", async (event) => {
    const form = event.target.closest('form[data-action="move"]');
    if (!form) return;
    event.preventDefault();
    event.stopPropagation();
    const submitter = event.submitter;
    if (submitter?.dataset.confirm && !window.confirm(submitter.dataset.confirm)) return;
    const card = form.closest(".card");
    const id = card.dataset.convoy;
    busy.add(id);
    const result = await move(card, submitter?.value || "");
    const fresh = await settle(id);
    if (!result.ok) refuse(fresh || card, G.messageOf(result));
  }, true);

  // A press on a card may become a drag: hold its live refresh from the first touch, so a
  // refresh cannot swap the element out from under the pointer.
  let held = null;
  let dragging = null;
  board.addEventListener("pointerdown", (event) => {
    const card = event.target.closest(".cards .card");
    if (!card || !board.dataset.draggable) return;
    held = card.dataset.convoy;
    busy.add(held);
  }, true);
  document.addEventListener("pointerup", () => {
    const id = held;
    held = null;
    if (id && id !== dragging && busy.has(id)) {
      if (pending.has(id)) settle(id);
      else busy.delete(id);
    }
  }, true);

  function enableDrag() {
    if (!board.dataset.draggable || typeof window.Sortable === "undefined") return;
    board.querySelectorAll(".cards[data-column]").forEach((list) => {
      if (list.sortable) return;
      list.sortable = window.Sortable.create(list, {
        group: "convoys",
        sort: false, // columns are ordered by the server; only moves between them mean anything
        draggable: ".card",
        filter: "summary, button, input, select, .move",
        preventOnFilter: false,
        forceFallback: true, // mouse events, not native drag and drop: the same in every browser
        fallbackOnBody: true,
        delay: 150,
        delayOnTouchOnly: true, // a phone still scrolls the board
        animation: 150,
        ghostClass: "card-ghost",
        chosenClass: "card-chosen",
        onStart: (event) => {
          dragging = event.item.dataset.convoy;
          busy.add(dragging);
        },
        onEnd: async (event) => {
          const card = event.item;
          const id = card.dataset.convoy;
          dragging = null;
          if (event.from === event.to) {
            settle(id);
            return;
          }
          card.classList.add("moving");
          const result = await move(card, event.to.dataset.column);
          card.classList.remove("moving");
          if (!result.ok) {
            // Snap back to where the convoy really is, then show why.
            const home = column(result.payload.state) || event.from;
            home.insertBefore(card, home === event.from ? event.from.children[event.oldIndex] || null : home.firstChild);
          }
          const fresh = await settle(id);
          if (!result.ok) refuse(fresh || card, G.messageOf(result));
        },
      });
    });
  }

  // --- filters ---------------------------------------------------------------------------------------
  if (filters) {
    let filterTimer = null;
    const apply = () => {
      const params = new URLSearchParams(new FormData(filters));
      for (const [key, value] of [...params]) if (!value) params.delete(key);
      const qs = params.toString();
      window.history.replaceState(null, "", qs ? `?${qs}` : window.location.pathname);
      refreshColumns(`${columnsSrc}${qs ? `?${qs}` : ""}`);
    };
    filters.addEventListener("submit", (event) => {
      event.preventDefault();
      apply();
    });
    filters.addEventListener("change", apply);
    filters.addEventListener("input", (event) => {
      if (event.target.type !== "search") return;
      clearTimeout(filterTimer);
      filterTimer = setTimeout(apply, 250);
    });
  }

  document.addEventListener("DOMContentLoaded", enableDrag);
  if (document.readyState !== "loading") enableDrag();
})();
