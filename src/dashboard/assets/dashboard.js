// gemini-rotator dashboard: polls /dashboard/api/state and draws it. No libraries.
//
// The key grid is built once per shape (the set of keys and models) as one HTML string, then
// patched in place on each poll: only cells whose state or text changed are touched, and rows
// off screen cost nothing to lay out (CSS content-visibility). That keeps 1,000 keys × several
// models smooth. Every request that changes something sends `x-dashboard: 1`, which the server
// requires of cookie-authenticated changes (cross-site requests cannot send it).
"use strict";

(function () {
  const POLL_MS = 3000;
  const $ = (id) => document.getElementById(id);

  let shape = "";     // keys and models the grid was built for
  let rowEls = [];    // row elements, by position in state.keys
  let cellEls = [];   // [row][model] cell elements
  let lastText = [];  // [row][model] "state|text|title" last drawn
  let models = [];
  let keys = [];
  let timer = null;

  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
  }[c]));

  function duration(s) {
    if (s == null) return "";
    if (s < 60) return s + "s";
    if (s < 3600) return Math.round(s / 60) + "m";
    const h = Math.floor(s / 3600), m = Math.round((s % 3600) / 60);
    return m ? h + "h" + String(m).padStart(2, "0") : h + "h";
  }

  const LABEL = {
    ok: "usable", cooling: "cooling", exhausted: "out for the day",
    disabled: "disabled", not_allowed: "not allowed",
  };

  function cellText(c) {
    switch (c.state) {
      case "ok": return c.today ? "ok · " + c.today : "ok";
      case "cooling": return "cool " + duration(c.left_s);
      case "exhausted": return c.left_s != null ? "out " + duration(c.left_s) : "no quota";
      case "disabled": return "disabled";
      default: return "—";
    }
  }

  function cellTitle(k, model, c) {
    let t = keyLabel(k) + " × " + model + ": " + (LABEL[c.state] || c.state);
    if (c.left_s != null) t += " (back in " + duration(c.left_s) + ")";
    if (c.today) t += "; " + c.today + " requests today";
    if (c.failures) t += "; " + c.failures + " failures in a row";
    if (c.error) t += "; last error: " + c.error;
    if (k.disabled) t += "; key disabled: " + k.disabled;
    return t;
  }

  function keyLabel(k) {
    return k.name ? k.name + " (" + k.key + ")" : k.key;
  }

  async function call(method, path, body) {
    const headers = { "x-dashboard": "1" };
    if (body !== undefined) headers["content-type"] = "application/json";
    const response = await fetch(path, {
      method, headers, credentials: "same-origin", cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 401) {
      // The session ended (logout elsewhere, restart, expiry): back to the login form.
      window.location.assign("/dashboard");
      throw new Error("session ended");
    }
    let json = null;
    try { json = await response.json(); } catch (_) { /* not JSON */ }
    return { ok: response.ok, status: response.status, json };
  }

  function say(text, bad) {
    const m = $("message");
    m.textContent = text;
    m.classList.toggle("bad", !!bad);
    m.hidden = false;
  }

  async function action(button, method, path, body, describe) {
    button.disabled = true;
    try {
      const r = await call(method, path, body);
      const msg = r.json && (r.json.message || (r.json.error && r.json.error.message));
      say(describe(r, msg), !r.ok);
    } catch (e) {
      say("Request failed: " + e.message, true);
    } finally {
      button.disabled = false;
      poll();
    }
  }

  // ---- grid ----------------------------------------------------------------------------

  function buildGrid() {
    const grid = $("grid");
    grid.style.setProperty("--models", String(Math.max(models.length, 1)));
    let head = '<span role="columnheader">key</span>';
    models.forEach((m, j) => {
      head += '<span class="m" role="columnheader" title="' + esc(m) + '"><span>' + esc(m) +
        '</span><button type="button" class="small reset-model" data-m="' + j +
        '" title="reset every key for ' + esc(m) + '">reset</button></span>';
    });
    head += '<span role="columnheader"></span>';
    $("grid-head").innerHTML = head;

    const parts = [];
    keys.forEach((k, i) => {
      let row = '<div class="row" role="row" data-i="' + i + '" data-key="' + esc(k.key) +
        '"><span class="k mono" role="rowheader" title="' + esc(keyLabel(k)) + '">' +
        esc(keyLabel(k)) + "</span>";
      for (let j = 0; j < models.length; j++) {
        row += '<span class="c" role="cell" data-model="' + esc(models[j]) + '"></span>';
      }
      row += '<button type="button" class="small reset-key" data-i="' + i +
        '" title="reset ' + esc(k.key) + ' for every model">reset</button></div>';
      parts.push(row);
    });
    const rows = $("rows");
    rows.innerHTML = parts.join("");
    rowEls = Array.from(rows.children);
    cellEls = rowEls.map((r) => Array.from(r.querySelectorAll(".c")));
    lastText = rowEls.map(() => new Array(models.length).fill(""));
    $("no-models").hidden = models.length > 0;
  }

  function patchGrid() {
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i];
      rowEls[i].classList.toggle("off", !!k.disabled);
      let problem = !!k.disabled;
      for (let j = 0; j < models.length; j++) {
        const c = k.cells[j];
        if (c.state !== "ok" && c.state !== "not_allowed") problem = true;
        const text = cellText(c);
        const title = cellTitle(k, models[j], c);
        const sig = c.state + "|" + text + "|" + title;
        if (lastText[i][j] === sig) continue;
        lastText[i][j] = sig;
        const el = cellEls[i][j];
        el.dataset.state = c.state;
        el.textContent = text;
        el.title = title;
      }
      rowEls[i].dataset.problem = problem ? "1" : "";
    }
    applyFilter();
  }

  function applyFilter() {
    const q = $("filter").value.trim().toLowerCase();
    const onlyProblems = $("problems-only").checked;
    let shown = 0;
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i];
      const text = (k.key + " " + (k.name || "") + " " + (k.project || "")).toLowerCase();
      const visible = (!q || text.includes(q)) && (!onlyProblems || rowEls[i].dataset.problem === "1");
      rowEls[i].classList.toggle("hidden", !visible);
      if (visible) shown++;
    }
    $("shown").textContent = shown === keys.length ? keys.length + " keys" : shown + " of " + keys.length + " keys";
  }

  // ---- panels --------------------------------------------------------------------------

  function drawChart(svg, values) {
    const max = Math.max(1, ...values);
    const w = 600 / values.length;
    let out = "";
    values.forEach((v, i) => {
      if (!v) return;
      const h = Math.max(1.5, (v / max) * 96);
      out += '<rect x="' + (i * w + 0.5).toFixed(1) + '" y="' + (100 - h).toFixed(1) +
        '" width="' + Math.max(1, w - 1).toFixed(1) + '" height="' + h.toFixed(1) + '"><title>' +
        v + "</title></rect>";
    });
    svg.innerHTML = out;
    return max;
  }

  function drawTraffic(traffic) {
    const req = traffic.map((m) => m.requests);
    const err = traffic.map((m) => m.errors);
    const sum = (a) => a.reduce((x, y) => x + y, 0);
    drawChart($("chart-requests"), req);
    drawChart($("chart-errors"), err);
    $("requests-note").textContent = sum(req) + " in the hour · peak " + Math.max(0, ...req) + "/min";
    $("errors-note").textContent = sum(err) + " in the hour · peak " + Math.max(0, ...err) + "/min";
  }

  function drawUsable(usable) {
    let out = "";
    for (const u of usable) {
      const pct = u.allowed ? Math.round((u.usable / u.allowed) * 100) : 0;
      const cls = u.usable === 0 ? "bar none" : pct < 34 ? "bar low" : "bar";
      out += '<span class="name mono" title="' + esc(u.model) + '">' + esc(u.model) +
        '</span><span class="' + cls + '"><span data-pct="' + pct + '"></span></span>' +
        '<span class="count" data-model="' + esc(u.model) + '">' + u.usable + " / " + u.allowed + "</span>";
    }
    const box = $("usable");
    box.innerHTML = out || '<span class="muted">no models yet</span>';
    // Widths through CSSOM: the page's CSP forbids inline style attributes.
    box.querySelectorAll("[data-pct]").forEach((el) => { el.style.width = el.dataset.pct + "%"; });
  }

  function drawConfig(cfg) {
    const r = cfg.last_reload || {};
    const rows = [
      ["file", esc(cfg.path)],
      ["hash", '<span class="mono">' + esc(String(cfg.hash).slice(0, 16)) + "</span>"],
      ["loaded", esc(cfg.loaded_at)],
      ["last reload", r.ok
        ? '<span id="reload-result">ok</span> at ' + esc(r.at)
        : '<span id="reload-result" class="bad">rejected</span> at ' + esc(r.at) +
          (r.error ? '<br><span class="bad mono">' + esc(r.error) + "</span>" : "")],
    ];
    if (cfg.restart_required) rows.push(["restart", '<span class="bad">' + esc(cfg.restart_required) + "</span>"]);
    $("config").innerHTML = rows.map(([k, v]) => "<dt>" + k + "</dt><dd>" + v + "</dd>").join("");
  }

  // ---- polling -------------------------------------------------------------------------

  async function poll() {
    clearTimeout(timer);
    try {
      const r = await call("GET", "/dashboard/api/state");
      if (!r.ok || !r.json) throw new Error("state: HTTP " + r.status);
      render(r.json);
      $("problem").hidden = true;
    } catch (e) {
      if (e.message !== "session ended") {
        $("problem").textContent = "Cannot reach the proxy (" + e.message + "); retrying…";
        $("problem").hidden = false;
      }
    }
    // A hidden tab stops polling; showing it again polls at once.
    if (!document.hidden) timer = setTimeout(poll, POLL_MS);
  }

  function render(s) {
    const t0 = performance.now();
    models = s.models;
    keys = s.keys;
    const newShape = models.join("\n") + "\u0000" + keys.map((k) => k.key + "|" + (k.name || "")).join("\n");
    if (newShape !== shape) {
      shape = newShape;
      buildGrid();
    }
    patchGrid();
    drawUsable(s.usable);
    drawTraffic(s.traffic);
    drawConfig(s.config);
    $("summary").textContent = s.available_keys + " of " + s.total_keys + " keys usable";
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.rows = String(rowEls.length);
    document.body.dataset.renderMs = String(Math.round(performance.now() - t0));
    document.body.dataset.polls = String((Number(document.body.dataset.polls) || 0) + 1);
  }

  // ---- wiring --------------------------------------------------------------------------

  function describeReset(what) {
    return (r, msg) => r.ok ? msg || "Reset " + what : "Reset failed: " + (msg || "HTTP " + r.status);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("rows").addEventListener("click", (ev) => {
      const b = ev.target.closest("button.reset-key");
      if (!b) return;
      const k = keys[Number(b.dataset.i)];
      if (!k) return;
      action(b, "POST", "/reset-api-key-health", { api_key_pattern: k.key }, describeReset(k.key));
    });
    $("grid-head").addEventListener("click", (ev) => {
      const b = ev.target.closest("button.reset-model");
      if (!b) return;
      const m = models[Number(b.dataset.m)];
      if (m === undefined) return;
      action(b, "POST", "/reset-api-key-health", { model: m }, describeReset(m));
    });
    $("reset-all").addEventListener("click", (ev) => {
      action(ev.currentTarget, "POST", "/admin/reset-keys", undefined, describeReset("every key"));
    });
    $("reload").addEventListener("click", (ev) => {
      action(ev.currentTarget, "POST", "/admin/reload", undefined, (r) => {
        const j = r.json || {};
        if (j.ok === false) return "Reload rejected, the running config stays: " + j.error;
        if (!r.ok) return "Reload failed: " + ((j.error && j.error.message) || "HTTP " + r.status);
        if (!j.applied) return "Reloaded: the config is unchanged.";
        const changes = Array.isArray(j.changes) ? j.changes.join("; ") : "";
        return "Reloaded config " + String(j.hash).slice(0, 12) + (changes ? ": " + changes : "");
      });
    });
    $("logout").addEventListener("click", async () => {
      try { await call("POST", "/dashboard/logout"); } catch (_) { /* leaving anyway */ }
      window.location.assign("/dashboard");
    });
    $("filter").addEventListener("input", applyFilter);
    $("problems-only").addEventListener("change", applyFilter);
    document.addEventListener("visibilitychange", () => { if (!document.hidden) poll(); });
    poll();
  });
})();
