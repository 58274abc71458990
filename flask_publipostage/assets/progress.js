/* Publipostage des comptes: the live progress of a run (a PDF in preparation,
 * an email campaign).
 *
 * A file rather than an inline script, so that the pages work under a strict
 * Content-Security-Policy (script-src 'self'). Without it the page refreshes
 * itself (<noscript> meta refresh). The page says everything through data-*
 * attributes:
 *
 *   [data-pp-progress="<status URL>"]  the box; its JSON status is polled
 *   [data-pp-field="<key>"]            shows that key of the status; a <progress>
 *                                      takes it as its value (a percentage)
 *   [data-pp-prefix], [data-pp-empty]  text put before a value, or shown instead of none
 *   [data-pp-hide-empty]               hidden while its value is empty
 *
 * Once the run is no longer queued, running or waiting, the page reloads and
 * shows the outcome (the download, the report).
 */
(function () {
  "use strict";

  if (!window.fetch) {
    return;
  }

  var ACTIVE = ["queued", "running", "waiting"];
  var EVERY_MS = 1000;
  var RETRY_MS = 3000;

  function show(el, value) {
    var text = value === null || value === undefined ? "" : String(value);
    if (el.tagName === "PROGRESS") {
      el.value = Number(value) || 0;
      el.textContent = text + " %";
      return;
    }
    if (!text && el.hasAttribute("data-pp-empty")) {
      text = el.getAttribute("data-pp-empty");
    } else if (text && el.hasAttribute("data-pp-prefix")) {
      text = el.getAttribute("data-pp-prefix") + text;
    }
    el.textContent = text;
    if (el.hasAttribute("data-pp-hide-empty")) {
      el.hidden = !text;
    }
  }

  function follow(box) {
    var url = box.getAttribute("data-pp-progress");

    function poll() {
      fetch(url, { headers: { "X-Requested-With": "fetch" }, credentials: "same-origin" })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (status) {
          if (!status) {
            window.setTimeout(poll, RETRY_MS);
            return;
          }
          if (ACTIVE.indexOf(status.state) === -1) {
            window.location.reload();
            return;
          }
          box.querySelectorAll("[data-pp-field]").forEach(function (el) {
            show(el, status[el.getAttribute("data-pp-field")]);
          });
          window.setTimeout(poll, EVERY_MS);
        })
        .catch(function () { window.setTimeout(poll, RETRY_MS); });
    }

    window.setTimeout(poll, EVERY_MS / 2);
  }

  document.querySelectorAll("[data-pp-progress]").forEach(follow);
})();
