// Starts Swagger UI on /docs (webapp/openapi.py) from a file, not an inline script: the CSP allows no inline script.
(() => {
  "use strict";
  const root = document.getElementById("swagger-ui");
  const config = JSON.parse(root.dataset.config);
  window.ui = SwaggerUIBundle({
    ...config,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  });
})();
