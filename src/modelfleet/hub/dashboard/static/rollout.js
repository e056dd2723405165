// A rollout's page: say what an action's refusal was (409: not valid now, 403: no right).
// The buttons post with htmx (hx-swap="none"); the page itself moves by the live stream.
(function () {
  "use strict";
  function message(text) {
    var el = document.getElementById("rollout-action-message");
    if (el) el.textContent = text;
  }
  document.addEventListener("htmx:beforeRequest", function (event) {
    if (event.target.closest && event.target.closest(".rollout-actions")) message("");
  });
  document.addEventListener("htmx:responseError", function (event) {
    var elt = event.detail.elt;
    if (!elt || !elt.closest || !elt.closest(".rollout-actions")) return;
    var xhr = event.detail.xhr;
    var text = "refused (" + xhr.status + ")";
    try {
      var body = JSON.parse(xhr.responseText);
      if (body && body.error && body.error.message) text = body.error.message;
    } catch (e) { /* not JSON: keep the status */ }
    message(text);
  });
})();
