/* A run's log, followed live on the rig page. Needs live.js (window.GasTown).
 *
 * Each `<pre data-run-log data-log-src=...>` is filled from the runs API: first the log's tail
 * (`GET .../log/`), then what follows it (`?offset=<next_offset>`) about every second while the
 * run lives; it stops once the API says `complete` (the run ended and everything was read).
 * The page keeps the last ~200 KB, and stays scrolled to the end unless the reader scrolled up.
 *
 * The element sits in the page's live section, which is re-rendered on events: it carries
 * `data-keep`, so live.js moves this very element (text and all) into the fresh section. A new
 * run brings a new element, picked up on `gastown:swapped`.
 */
(() => {
  "use strict";

  const POLL_MS = 1000;
  const CAP = 200 * 1024; // characters kept in the page
  const followed = new WeakSet();

  function nearBottom(el) {
    return el.scrollHeight - el.scrollTop - el.clientHeight < 40;
  }

  function append(el, text) {
    if (!text) return;
    const stick = nearBottom(el);
    let node = el.firstChild;
    if (!node || node.nodeType !== Node.TEXT_NODE || node.nextSibling) {
      el.textContent = el.textContent; // one text node: cheap appends and trims
      node = el.firstChild || el.appendChild(document.createTextNode(""));
    }
    node.appendData(text);
    if (node.length > CAP) {
      let cut = node.length - CAP;
      const newline = node.data.indexOf("\n", cut);
      if (newline !== -1 && newline - cut < 4096) cut = newline + 1; // start at a whole line
      node.deleteData(0, cut);
      el.dataset.trimmed = "1";
    }
    if (stick) el.scrollTop = el.scrollHeight;
  }

  async function fetchChunk(url) {
    const response = await fetch(url, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    if (response.status === 404 || response.status === 403) return { gone: true };
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    return response.json();
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function follow(el) {
    followed.add(el);
    const src = el.dataset.logSrc;
    let offset = null;
    let failures = 0;
    el.setAttribute("aria-busy", "true");
    while (el.isConnected) {
      let chunk;
      try {
        chunk = await fetchChunk(offset === null ? src : `${src}?offset=${offset}`);
        failures = 0;
      } catch (error) {
        failures += 1;
        await sleep(Math.min(10000, POLL_MS * 2 ** failures));
        continue;
      }
      if (chunk.gone) break;
      if (offset === null && chunk.offset > 0) el.dataset.trimmed = "1"; // started at the tail
      append(el, chunk.text);
      offset = chunk.next_offset;
      el.dataset.offset = String(offset);
      if (chunk.complete) {
        el.dataset.complete = "1";
        break;
      }
      // More is waiting already (a big log): read on at once; else wait for new output.
      if (chunk.next_offset < chunk.size) continue;
      await sleep(POLL_MS);
    }
    el.removeAttribute("aria-busy");
  }

  function attach(root = document) {
    root.querySelectorAll("pre[data-run-log]").forEach((el) => {
      if (!followed.has(el)) follow(el);
    });
  }

  document.addEventListener("gastown:swapped", () => attach());
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", () => attach());
  else attach();
})();
