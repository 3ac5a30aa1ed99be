// Starts Swagger UI on this service's own description. Kept out of the
// HTML so the page's Content-Security-Policy can refuse inline scripts.
"use strict";
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  // The base layout has no top bar (which would need the standalone preset
  // and lets a reader load any other URL).
  layout: "BaseLayout",
  deepLinking: true,
  // The default would send the description's URL to a remote validator and
  // show its badge: this page talks to this service only.
  validatorUrl: null,
  displayRequestDuration: true,
  defaultModelsExpandDepth: 0,
  // A newcomer reaches "Try it out" without an extra click.
  tryItOutEnabled: true,
});
