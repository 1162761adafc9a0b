/* The convoy page's cascade feed: a change of filter or a page link fetches the feed's fragment
 * and swaps it in (no reload), keeps the address in step (history.replaceState) and points the
 * live refresh at the feed now shown (the section's data-live-src). Without JavaScript the
 * form and the links load the page with the same query string. */
(() => {
  "use strict";

  const form = document.getElementById("feed-filters");
  const section = document.getElementById("feed-live");
  if (!form || !section || !window.GasTown) return;
  const src = form.dataset.feedSrc;
  const clear = form.querySelector(".feed-clear");

  function formQuery() {
    const params = new URLSearchParams();
    for (const [name, value] of new FormData(form)) if (value) params.set(name, value);
    return params.toString();
  }

  async function show(query, { scroll = false } = {}) {
    const url = query ? `${src}?${query}` : src;
    let result;
    try {
      result = await window.GasTown.fetchFragment(url);
    } catch (error) {
      window.GasTown.toast("The cascade feed could not be loaded.", "error");
      return;
    }
    const old = section.firstElementChild;
    if (!result?.node || !old) return;
    section.dataset.liveSrc = url;
    window.GasTown.swap(old, result.node);
    const params = new URLSearchParams(query);
    if (clear) clear.hidden = !(params.get("feed_rig") || params.get("feed_kind"));
    const address = new URL(window.location.href);
    address.search = query;
    address.hash = "feed";
    window.history.replaceState(null, "", address);
    if (scroll) document.getElementById("feed")?.scrollIntoView({ block: "start" });
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    show(formQuery());
  });
  form.addEventListener("change", () => show(formQuery()));

  document.getElementById("feed")?.addEventListener("click", (event) => {
    const link = event.target.closest("a[data-feed-link]");
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    if (link === clear) form.querySelectorAll("select").forEach((select) => (select.value = ""));
    show(link.dataset.feedLink, { scroll: link !== clear });
  });
})();
