// Parley pages: small behaviours that would otherwise be inline handlers (the CSP allows scripts from files only).
(() => {
  "use strict";
  // A form marked `data-reset-on-success` empties itself once htmx has posted it successfully (was hx-on).
  document.addEventListener("htmx:afterRequest", (event) => {
    const form = event.detail.elt;
    if (event.detail.successful && form instanceof HTMLFormElement && form.hasAttribute("data-reset-on-success")) {
      form.reset();
    }
  });

  // Times come from the server as <time datetime="…Z">…UTC</time>: show them in the reader's time zone, keeping the
  // UTC text as the tooltip. Runs on the page, then on whatever is added later (htmx swaps, chat.js's streamed
  // messages), so no caller has to remember to.
  const pad = (number) => String(number).padStart(2, "0");
  const localize = (time) => {
    const moment = new Date(time.dateTime);
    if (Number.isNaN(moment.getTime())) return;
    if (!time.title) time.title = time.textContent;
    time.textContent = `${moment.getFullYear()}-${pad(moment.getMonth() + 1)}-${pad(moment.getDate())} `
      + `${pad(moment.getHours())}:${pad(moment.getMinutes())}`;
    time.dataset.local = "";
  };
  const localizeWithin = (root) => {
    if (root.matches("time[datetime]:not([data-local])")) localize(root);
    root.querySelectorAll("time[datetime]:not([data-local])").forEach(localize);
  };
  localizeWithin(document.documentElement);
  new MutationObserver((records) => {
    for (const record of records) {
      for (const node of record.addedNodes) if (node instanceof Element) localizeWithin(node);
    }
  }).observe(document.documentElement, { childList: true, subtree: true });
})();
