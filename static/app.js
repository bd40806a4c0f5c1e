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
})();
