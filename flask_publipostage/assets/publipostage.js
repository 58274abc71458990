/* Publipostage des comptes: live preview of the selection.
 *
 * Without this script the page works as a plain GET form ("Filtrer"). With it,
 * each change of the form #pp-filters fetches the preview fragment and swaps it
 * into #pp-results, keeps the URL in step with the filters (reload, back and a
 * shared link give the same list) and keeps step 3 acting on the same selection.
 *
 * Step 3 contract, for forms and links marked [data-pp-selection] (and GET forms
 * in #pp-actions): a GET form gets the selection as hidden inputs, a POST form in
 * its action's query string, a link in its href; other parameters are kept. The
 * event "publipostage:selection" (detail: {query, counters}) is then dispatched
 * on document.
 */
(function () {
  "use strict";

  var form = document.getElementById("pp-filters");
  var results = document.getElementById("pp-results");
  if (!form || !results || !window.fetch || !window.history || !window.URLSearchParams) {
    return;
  }

  var DEBOUNCE_MS = 150;
  // The selection's parameters and defaults, from the server's table of filters.
  var DEFAULTS = JSON.parse(form.getAttribute("data-defaults") || "{}");
  var SELECTION_PARAMS = JSON.parse(form.getAttribute("data-params") || "[]");
  var previewUrl = results.getAttribute("data-preview-url");
  var pageUrl = results.getAttribute("data-page-url") || form.getAttribute("action");
  var announcer = document.getElementById("pp-announce");
  var timer = null;
  var inflight = null;

  /* -- the query string of the form --------------------------------------- */

  function formParams() {
    var params = new URLSearchParams();
    var data = new FormData(form);
    data.forEach(function (value, key) {
      if (typeof value !== "string" || value === "" || DEFAULTS[key] === value) {
        return;
      }
      params.append(key, value);
    });
    return params;
  }

  /* Put the form back as a query string describes it (back/forward). */
  function applyParams(params) {
    var elements = form.elements;
    for (var i = 0; i < elements.length; i++) {
      var el = elements[i];
      if (!el.name) {
        continue;
      }
      var values = params.getAll(el.name);
      if (el.type === "checkbox") {
        el.checked = values.indexOf(el.value) !== -1;
      } else if (el.type === "radio") {
        var wanted = values.length ? values[0] : DEFAULTS[el.name];
        el.checked = el.value === wanted;
      } else if (el.tagName === "SELECT") {
        el.value = values.length ? values[0] : (DEFAULTS[el.name] || "");
      } else if (el.type !== "submit" && el.type !== "button") {
        el.value = values.length ? values[0] : "";
      }
    }
    syncSortOptions();
    filterAdvice();
    checkDates();
    syncRestrictions();
    var everyClass = document.querySelector("#pp-pdf input[name=every_class]");
    var kept = form.elements.namedItem("every_class");
    if (everyClass && kept) {
      everyClass.checked = kept.value === "y";
    }
  }

  /* A restriction's banner shows while its value is in the form. */
  function syncRestrictions() {
    form.querySelectorAll("[data-pp-restriction]").forEach(function (banner) {
      var input = banner.querySelector("input[type=hidden]");
      banner.hidden = !input || !input.value;
    });
  }

  /* -- fetching the preview ------------------------------------------------- */

  function schedule() {
    window.clearTimeout(timer);
    timer = window.setTimeout(function () {
      update(formParams(), "push");
    }, DEBOUNCE_MS);
  }

  /* history: "push" (a new choice), "replace" or "none" (back/forward). */
  function update(params, history) {
    if (inflight) {
      inflight.abort();
    }
    var controller = window.AbortController ? new AbortController() : null;
    inflight = controller;
    var query = params.toString();
    results.setAttribute("aria-busy", "true");
    results.classList.add("pp-loading");
    var started = window.performance ? performance.now() : 0;
    return fetch(previewUrl + (query ? "?" + query : ""), {
      headers: { "X-Requested-With": "fetch" },
      credentials: "same-origin",
      signal: controller ? controller.signal : undefined
    }).then(function (response) {
      return response.text().then(function (html) {
        return { ok: response.ok, status: response.status, html: html };
      });
    }).then(function (reply) {
      if (inflight !== controller) {
        return;
      }
      inflight = null;
      if (reply.status === 401) {
        window.location.reload();
        return;
      }
      results.innerHTML = reply.html;
      finish();
      if (reply.ok) {
        var url = pageUrl + (query ? "?" + query : "");
        if (history === "push" && url !== location.pathname + location.search) {
          window.history.pushState({ ppQuery: query }, "", url);
        } else if (history === "replace") {
          window.history.replaceState({ ppQuery: query }, "", url);
        }
        syncActions(params);
        syncSummary();
        syncPdfOptions();
        announce();
      } else {
        var alert = results.querySelector("[role=alert]");
        announceText(alert ? alert.textContent : "");
      }
      var elapsed = window.performance ? performance.now() - started : 0;
      results.setAttribute("data-updated-ms", String(Math.round(elapsed)));
      document.dispatchEvent(new CustomEvent("publipostage:updated", {
        detail: { query: query, ok: reply.ok, ms: elapsed }
      }));
    }).catch(function (error) {
      if (error && error.name === "AbortError") {
        return;
      }
      if (inflight === controller) {
        inflight = null;
        finish();
        var message = document.createElement("div");
        message.className = "pp-error";
        message.setAttribute("role", "alert");
        message.textContent = results.getAttribute("data-error-text") || "";
        results.insertBefore(message, results.firstChild);
      }
    });
  }

  function finish() {
    results.removeAttribute("aria-busy");
    results.classList.remove("pp-loading");
  }

  /* -- screen readers: one sentence per update, from a stable live region ----- */

  function announce() {
    var counters = results.querySelector(".pp-counters");
    announceText(counters ? counters.getAttribute("data-summary") : "");
  }

  function announceText(text) {
    if (!announcer) {
      return;
    }
    announcer.textContent = "";
    window.setTimeout(function () { announcer.textContent = text || ""; }, 50);
  }

  /* -- step 3 follows the selection ------------------------------------------- */

  function selectionOnly(params) {
    var kept = new URLSearchParams();
    params.forEach(function (value, key) {
      if (SELECTION_PARAMS.indexOf(key) !== -1) {
        kept.append(key, value);
      }
    });
    return kept;
  }

  function withSelection(href, selection) {
    var url = new URL(href, location.href);
    SELECTION_PARAMS.forEach(function (key) { url.searchParams.delete(key); });
    selection.forEach(function (value, key) { url.searchParams.append(key, value); });
    return url.pathname + url.search + url.hash;
  }

  function syncActions(params) {
    var selection = selectionOnly(params);
    var actions = document.getElementById("pp-actions");
    var targets = [];
    if (actions) {
      Array.prototype.push.apply(targets, actions.querySelectorAll("form"));
    }
    Array.prototype.push.apply(targets, document.querySelectorAll("[data-pp-selection]"));
    targets.forEach(function (el) {
      if (el === form) {
        return;
      }
      if (el.tagName === "A" && el.hasAttribute("data-pp-selection")) {
        el.setAttribute("href", withSelection(el.getAttribute("href"), selection));
        return;
      }
      if (el.tagName !== "FORM") {
        return;
      }
      var isGet = (el.getAttribute("method") || "get").toLowerCase() === "get";
      if (isGet) {
        // A GET form sends its fields, not its action's query: hidden inputs.
        Array.prototype.slice.call(el.querySelectorAll("input[type=hidden]")).forEach(function (input) {
          if (SELECTION_PARAMS.indexOf(input.name) !== -1) {
            input.parentNode.removeChild(input);
          }
        });
        selection.forEach(function (value, key) {
          var input = document.createElement("input");
          input.type = "hidden";
          input.name = key;
          input.value = value;
          el.appendChild(input);
        });
      } else if (el.hasAttribute("data-pp-selection")) {
        // A POST form carries the selection in its action's query string.
        el.setAttribute("action", withSelection(el.getAttribute("action") || location.href, selection));
      }
    });
    var counters = results.querySelector(".pp-counters");
    if (counters) {
      var selected = Number(counters.getAttribute("data-selected"));
      var withoutEmail = Number(counters.getAttribute("data-without-email"));
      setCount("send", selected - withoutEmail);
      setCount("skip", withoutEmail);
      // "N fiches pour M comptes": what a bundle for every class prints (sorted by class).
      setCount("accounts", selected);
      if (counters.hasAttribute("data-class-sheets")) {
        setCount("sheets", Number(counters.getAttribute("data-class-sheets")));
      }
    }
    document.dispatchEvent(new CustomEvent("publipostage:selection", {
      detail: {
        query: selection.toString(),
        counters: counters ? {
          selected: Number(counters.getAttribute("data-selected")),
          withoutEmail: Number(counters.getAttribute("data-without-email")),
          notActivated: Number(counters.getAttribute("data-not-activated"))
        } : null
      }
    }));
  }

  /* A count in words: its element holds the singular and plural forms (French: 0 and 1 are singular). */
  function setCount(name, n) {
    document.querySelectorAll("[data-pp-count=" + name + "]").forEach(function (el) {
      var pattern = el.getAttribute(n > 1 ? "data-many" : "data-one") || "";
      el.textContent = pattern.replace(/\d+/, String(n));
    });
  }

  /* -- what the admin sees while filtering ---------------------------------------- */

  // The counters, repeated in a summary that stays in sight above the filters.
  function syncSummary() {
    var summary = document.getElementById("pp-summary");
    var counters = results.querySelector(".pp-counters");
    if (summary && counters) {
      summary.textContent = counters.getAttribute("data-summary");
    }
  }

  // Inverted creation dates are flagged next to the date fields.
  function checkDates() {
    var since = form.elements.namedItem("created_since");
    var before = form.elements.namedItem("created_before");
    var error = document.getElementById("pp-dates-error");
    if (!since || !before || !error) {
      return;
    }
    var inverted = Boolean(since.value && before.value && since.value > before.value);
    error.hidden = !inverted;
    [since, before].forEach(function (field) {
      if (inverted) {
        field.setAttribute("aria-invalid", "true");
      } else {
        field.removeAttribute("aria-invalid");
      }
    });
  }

  /* -- step 3: an option that cannot apply is greyed out, with its reason -------- */

  function syncOption(name, why, disabled) {
    var box = document.querySelector("#pp-pdf input[name=" + name + "]");
    var reason = document.getElementById(why);
    if (!box) {
      return;
    }
    box.disabled = disabled;
    if (disabled) {
      box.checked = false;
    }
    if (reason) {
      reason.hidden = !disabled;
    }
  }

  function syncPdfOptions() {
    var cards = document.querySelector("#pp-pdf input[name=template][value=cards]");
    syncOption("postal", "pp-postal-why", Boolean(cards && cards.checked));
    var params = formParams();
    // The first sort key (a lone "Puis par" counts as the first one).
    var first = params.get("sort") || params.get("then");
    var byClass = params.get("sort") === "class" || params.get("then") === "class";
    syncOption("signoff", "pp-signoff-why", first !== "class");
    syncOption("zip", "pp-zip-why", first !== "class");
    syncOption("every_class", "pp-every-class-why", !byClass);
    // While "a bundle for every class" is ticked, the list counts its sheets.
    var box = document.querySelector("#pp-pdf input[name=every_class]");
    var kept = form.elements.namedItem("every_class");
    if (box && kept) {
      kept.value = box.checked ? "y" : "";
    }
    var sheets = document.getElementById("pp-every-class-count");
    var counters = results.querySelector(".pp-counters");
    if (sheets) {
      sheets.hidden = !box || !box.checked || !counters || !counters.hasAttribute("data-class-sheets");
    }
  }

  /* -- "Puis par" cannot repeat "Par" ------------------------------------------ */

  function syncSortOptions() {
    var first = form.elements.namedItem("sort");
    var then = form.elements.namedItem("then");
    if (!first || !then || !then.options) {
      return;
    }
    for (var i = 0; i < then.options.length; i++) {
      var option = then.options[i];
      option.disabled = option.value !== "none" && option.value === first.value;
    }
    if (then.value !== "none" && then.value === first.value) {
      then.value = "none";
    }
  }

  /* -- advice rows of the ticked profiles (all when none) ------------------------ */

  function filterAdvice() {
    var ticked = [];
    form.querySelectorAll("input[name=profile]").forEach(function (box) {
      if (box.checked) {
        ticked.push(box.value);
      }
    });
    document.querySelectorAll(".pp-advice-table tr[data-profile]").forEach(function (row) {
      row.hidden = ticked.length > 0 && ticked.indexOf(row.getAttribute("data-profile")) === -1;
    });
  }

  /* -- search boxes of the school and class lists ---------------------------- */

  function fold(text) {
    var value = String(text || "").replace(/œ/g, "oe").replace(/Œ/g, "oe")
      .replace(/æ/g, "ae").replace(/Æ/g, "ae");
    if (value.normalize) {
      value = value.normalize("NFD").replace(/[\u0300-\u036f]/g, "");
    }
    return value.toLowerCase().trim();
  }

  /* Each search box ([data-pp-search]: the schools, the classes) hides the
     entries of its list that do not match, and counts those shown. */
  function filterList(search) {
    var list = document.getElementById(search.getAttribute("data-pp-search"));
    var counter = document.getElementById(search.getAttribute("aria-describedby"));
    var needle = fold(search.value);
    var shown = 0;
    list.querySelectorAll("[data-name]").forEach(function (label) {
      var match = !needle || fold(label.getAttribute("data-name")).indexOf(needle) !== -1;
      label.hidden = !match;
      if (match) {
        shown += 1;
      }
    });
    if (counter) {
      var pattern = counter.getAttribute(shown > 1 ? "data-many" : "data-one") || "";
      counter.textContent = pattern.replace(/\d+/, String(shown));
    }
  }

  document.querySelectorAll("[data-pp-search]").forEach(function (search) {
    search.addEventListener("input", function () { filterList(search); });
    search.addEventListener("keydown", function (event) {
      // Enter in the search box must not submit the filters.
      if (event.key === "Enter") {
        event.preventDefault();
      }
    });
  });

  /* -- wiring ------------------------------------------------------------------ */

  function onChange(event) {
    var target = event.target;
    if (!target || !target.name) {
      return;
    }
    if (target.name === "sort") {
      syncSortOptions();
    }
    if (target.name === "profile") {
      filterAdvice();
    }
    if (target.type === "date") {
      checkDates();
    }
    // A half-typed date fires "input" with an empty value: wait for a full one.
    if (target.type === "date" && event.type === "input" && target.value === "" && target.validity && target.validity.badInput) {
      return;
    }
    schedule();
  }

  form.addEventListener("change", onChange);
  form.addEventListener("input", onChange);
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    window.clearTimeout(timer);
    update(formParams(), "push");
  });

  var reset = form.querySelector(".pp-reset");
  if (reset) {
    reset.addEventListener("click", function (event) {
      event.preventDefault();
      // The filters go; the template and the restrictions stay (they go on purpose).
      var params = new URLSearchParams();
      form.querySelectorAll("input[data-pp-keep]").forEach(function (input) {
        if (input.value) {
          params.append(input.name, input.value);
        }
      });
      applyParams(params);
      window.clearTimeout(timer);
      update(formParams(), "push");
    });
  }

  results.addEventListener("click", function (event) {
    var link = event.target.closest ? event.target.closest("a.pp-page-link") : null;
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) {
      return;
    }
    event.preventDefault();
    var params = new URL(link.href, location.href).searchParams;
    update(params, "push").then(function () {
      var table = results.querySelector(".pp-table-wrap");
      if (table) {
        table.focus();
      }
    });
  });

  window.addEventListener("popstate", function () {
    var params = new URLSearchParams(location.search);
    applyParams(params);
    window.clearTimeout(timer);
    update(params, "none");
  });

  form.addEventListener("click", function (event) {
    var remove = event.target.closest ? event.target.closest("[data-pp-remove]") : null;
    if (!remove) {
      return;
    }
    event.preventDefault();
    var banner = remove.closest("[data-pp-restriction]");
    banner.querySelectorAll("input[type=hidden]").forEach(function (input) { input.value = ""; });
    banner.hidden = true;
    window.clearTimeout(timer);
    update(formParams(), "push");
  });

  document.addEventListener("change", function (event) {
    if (event.target && event.target.name === "template" && event.target.closest("#pp-pdf")) {
      syncPdfOptions();
    }
    if (event.target && event.target.name === "every_class" && event.target.closest("#pp-pdf")) {
      syncPdfOptions();
      window.clearTimeout(timer);
      update(formParams(), "replace");
    }
  });

  /* -- "Mes sélections": the template ticked in step 3 is saved with the selection -- */

  var save = document.getElementById("pp-save");
  if (save) {
    save.addEventListener("submit", function () {
      var chosen = document.querySelector("#pp-pdf input[name=template]:checked");
      var kept = save.querySelector("input[name=template]");
      if (chosen && kept) {
        kept.value = chosen.value;
      }
    });
  }

  window.history.replaceState({ ppQuery: location.search.replace(/^\?/, "") }, "", location.href);
  syncSortOptions();
  filterAdvice();
  checkDates();
  syncPdfOptions();
  document.documentElement.classList.add("pp-js");
})();
