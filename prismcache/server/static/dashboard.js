// prismcache dashboard: polls the admin API and draws what it answers. No framework, no
// build step; every value is written with textContent (stored queries are user text).
"use strict";

const TOKEN_KEY = "prismcache.admin-token";
const POLL_MS = 3000;
const HOUR_S = 3600;
const PALETTE = ["#3b5bdb", "#e8590c", "#2b8a3e", "#c2255c", "#5f3dc4", "#0b7285",
                 "#a61e4d", "#5c940d", "#d9480f", "#1864ab"];

const $ = (id) => document.getElementById(id);
const state = { timer: null, samples: [], lastT: 0, categories: [], colors: new Map(),
                pending: null };

// -- formatting: every number shown with its unit --------------------------------------------
const dash = "—";
const fmtInt = (n) => (n == null ? dash : Math.round(n).toLocaleString("en-US"));
const fmtPct = (x, digits = 1) => (x == null ? dash : (x * 100).toFixed(digits) + " %");
const fmtNum = (x, digits = 3) => (x == null ? dash : Number(x).toFixed(digits));
function fmtSeconds(s) {
  if (s == null) return dash;
  const a = Math.abs(s);
  if (a === 0) return "0 ms";
  if (a < 0.001) return (s * 1e6).toFixed(0) + " µs";
  if (a < 1) return (s * 1000).toFixed(a < 0.01 ? 2 : 1) + " ms";
  if (a < 120) return s.toFixed(2) + " s";
  if (a < 7200) return (s / 60).toFixed(1) + " min";
  return (s / 3600).toFixed(1) + " h";
}
function fmtBytes(b) {
  if (b == null) return dash;
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(b) >= 1024 && i < units.length - 1) { b /= 1024; i += 1; }
  return (i === 0 ? String(Math.round(b)) : b.toFixed(1)) + " " + units[i];
}
function fmtUsd(x) {
  if (x == null) return dash;
  const a = Math.abs(x);
  return (x < 0 ? "−$" : "$") + a.toFixed(a >= 100 ? 0 : a >= 1 ? 2 : 4);
}
function fmtDuration(s) {
  if (s == null) return "never";
  const units = [["w", 604800], ["d", 86400], ["h", 3600], ["min", 60], ["s", 1]];
  for (const [u, n] of units) {
    if (s >= n && (u !== "w" || s % n === 0)) {
      const v = s / n;
      return (Number.isInteger(v) ? String(v) : v.toFixed(1)) + " " + u;
    }
  }
  return s.toFixed(1) + " s";
}
const fmtClock = (t) => new Date(t * 1000).toLocaleTimeString("en-GB", { hour12: false });

// -- the admin API --------------------------------------------------------------------------
class Unauthorized extends Error {}

async function api(path, body) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) throw new Unauthorized("not signed in");
  const init = { headers: { Authorization: "Bearer " + token }, cache: "no-store" };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  let data = null;
  try { data = await response.json(); } catch (_) { data = null; }
  if (response.status === 401 || response.status === 404 && path === "/admin/dashboard") {
    throw new Unauthorized((data && data.error && data.error.message) || "refused");
  }
  if (!response.ok) {
    throw new Error((data && data.error && data.error.message) || ("HTTP " + response.status));
  }
  return data;
}

// -- signing in and out ---------------------------------------------------------------------
function showApp(signedIn) {
  $("login").hidden = signedIn;
  $("app").hidden = !signedIn;
  $("logout").hidden = !signedIn;
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  clearTimeout(state.timer);
  state.timer = null;
  state.samples = [];
  state.lastT = 0;
  showApp(false);
  $("status").textContent = "Signed out";
  $("login-error").textContent = message || "";
  $("token").focus();
}

async function start() {
  try {
    await refresh();
  } catch (err) {
    if (err instanceof Unauthorized) { signOut("The admin API refused the token: " + err.message); return; }
    $("status").textContent = "Error: " + err.message;
  }
  const fromForm = !$("login").hidden;
  showApp(true);
  if (fromForm) $("main").focus();  // the form is gone: keyboard and reader users start here
  schedule();
}

function schedule() {
  clearTimeout(state.timer);
  state.timer = setTimeout(async () => {
    try {
      if (!document.hidden) await refresh();
    } catch (err) {
      if (err instanceof Unauthorized) { signOut("Signed out: " + err.message); return; }
      $("status").textContent = "Update failed: " + err.message;
    }
    schedule();
  }, POLL_MS);
}

async function refresh() {
  const [snap, timeline] = await Promise.all([
    api("/admin/dashboard"), api("/admin/timeline?since=" + state.lastT)]);
  for (const s of timeline.samples) state.samples.push(s);
  if (state.samples.length) state.lastT = state.samples[state.samples.length - 1].t;
  const horizon = Date.now() / 1000 - HOUR_S;
  while (state.samples.length && state.samples[0].t < horizon) state.samples.shift();
  render(snap, timeline.interval_s);
  $("status").textContent = "Live · updated " + fmtClock(Date.now() / 1000);
}

// -- rendering ------------------------------------------------------------------------------
function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text != null) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}

// A tile's value, with its unit set smaller after it.
function tile(id, value, unit) {
  const node = $(id);
  node.replaceChildren(value);
  if (unit) node.appendChild(el("span", " " + unit, "unit"));
}

function colorOf(name) {
  if (!state.colors.has(name)) state.colors.set(name, PALETTE[state.colors.size % PALETTE.length]);
  return state.colors.get(name);
}

// A <td> with the displayed text, and the raw value in data-value (the tests read it).
function cell(field, text, raw, cls = "num") {
  const td = el("td", text, cls);
  td.dataset.field = field;
  if (raw !== undefined && raw !== null) td.dataset.value = String(raw);
  return td;
}

// [label, css class, note]: a short state, and what explains it in smaller type.
function stateOf(c) {
  const e = c.economics;
  if (!c.policy.enabled) return ["off", "off", "in the configuration"];
  if (e && e.disabled) {
    const note = e.shadow_lookups ? "by economics; shadow: " + fmtInt(e.shadow_lookups) +
      " lookups, " + fmtPct(e.shadow_hit_rate) + " would hit" : "by economics; shadow sampling";
    return ["disabled", "disabled", note];
  }
  if (e && e.flagged) {
    return ["below break-even", "flagged", e.auto_disable ? "" : "auto-disable is off"];
  }
  if (c.policy.exact_only) return ["exact only", "on", ""];
  return ["on", "on", ""];
}

// No lookups and no entries: hidden unless "Show idle categories" is ticked.
function isIdle(c) {
  const s = c.stats;
  return !c.economics && (!s || (!s.lookups && !s.entries));
}

function withAdjustment(td, note) {
  if (note) td.appendChild(el("span", note, "adj"));
  return td;
}

function replaceRows(tbody, rows, empty, columns) {
  const fragment = document.createDocumentFragment();
  if (!rows.length) {
    const tr = el("tr", null, "empty");
    const td = el("td", empty);
    td.colSpan = columns;
    tr.appendChild(td);
    fragment.appendChild(tr);
  }
  for (const row of rows) fragment.appendChild(row);
  tbody.replaceChildren(fragment);
}

function render(snap, interval) {
  const cats = snap.categories;
  state.categories = cats.map((c) => c.category);
  cats.forEach((c) => colorOf(c.category));
  let lookups = 0, hits = 0, entries = 0, bytes = 0, wrong = 0, usd = 0, requests = 0;
  for (const c of cats) {
    const s = c.stats || {};
    lookups += s.lookups || 0; hits += s.hits || 0; entries += s.entries || 0;
    bytes += s.bytes || 0; wrong += c.wrong_hits; usd += c.usd_saved;
    requests += c.requests.hit + c.requests.miss + c.requests.bypass;
  }
  tile("t-requests", fmtInt(requests), "req");
  tile("t-hit-rate", fmtPct(lookups ? hits / lookups : null));
  tile("t-wrong", fmtInt(wrong), "reports");
  tile("t-entries", fmtInt(entries), "entries");
  tile("t-bytes", fmtBytes(bytes));
  tile("t-saved-calls", fmtInt(hits), "calls");
  tile("t-saved-usd", fmtUsd(usd));
  tile("t-load", snap.adaptive ? fmtPct(snap.load_level, 0) : "off");

  const rows = cats.map((c) => {
    const s = c.stats || { lookups: 0, hits: 0, exact_hits: 0, misses: 0, entries: 0, bytes: 0,
                           evictions: 0, hit_rate: 0 };
    const tr = el("tr", null, isIdle(c) ? "idle" : "");
    tr.dataset.category = c.category;
    const name = el("th", c.category);
    name.scope = "row";
    tr.appendChild(name);
    tr.appendChild(cell("lookups", fmtInt(s.lookups), s.lookups));
    tr.appendChild(cell("hit_rate", fmtPct(s.lookups ? s.hit_rate : null), s.hit_rate));
    tr.appendChild(cell("exact_hits", fmtInt(s.exact_hits), s.exact_hits));
    tr.appendChild(cell("semantic_hits", fmtInt(s.hits - s.exact_hits), s.hits - s.exact_hits));
    tr.appendChild(cell("wrong_hits", fmtInt(c.wrong_hits), c.wrong_hits));
    const cfg = c.policy, now = c.in_force;
    const drop = cfg.threshold - now.threshold;
    tr.appendChild(withAdjustment(cell("threshold", fmtNum(now.threshold), now.threshold),
      Math.abs(drop) > 1e-9 ? "config " + fmtNum(cfg.threshold) + ", load −" + fmtNum(drop) : ""));
    tr.appendChild(withAdjustment(cell("ttl", fmtDuration(now.ttl_s), now.ttl_s),
      now.ttl_s !== cfg.ttl_s ? "config " + fmtDuration(cfg.ttl_s) : ""));
    tr.appendChild(cell("entries", fmtInt(s.entries), s.entries));
    tr.appendChild(cell("bytes", fmtBytes(s.bytes), s.bytes));
    tr.appendChild(withAdjustment(cell("quota_use", fmtPct(c.quota.use), c.quota.use),
      "of " + fmtInt(c.quota.entries) + " entries"));
    tr.appendChild(cell("evictions", fmtInt(s.evictions), s.evictions));
    const [label, cls, note] = stateOf(c);
    tr.appendChild(withAdjustment(cell("state", label, cls, "state state-" + cls), note));
    return tr;
  });
  replaceRows($("categories").querySelector("tbody"), rows, "No categories yet.", 13);
  const idle = cats.filter(isIdle).length;
  $("idle-count").textContent = "(" + fmtInt(idle) + ")";

  const econ = cats.map((c) => {
    const e = c.economics;
    const s = c.stats || { hits: 0 };
    const tr = el("tr", null, isIdle(c) ? "idle" : "");
    tr.dataset.category = c.category;
    const name = el("th", c.category);
    name.scope = "row";
    tr.appendChild(name);
    tr.appendChild(cell("calls_saved", fmtInt(s.hits) + " calls", s.hits));
    tr.appendChild(cell("usd_saved", fmtUsd(c.usd_saved), c.usd_saved));
    tr.appendChild(cell("seconds_saved", fmtSeconds(c.seconds_saved), c.seconds_saved));
    tr.appendChild(cell("window_hit_rate", e ? fmtPct(e.hit_rate) : dash, e && e.hit_rate));
    tr.appendChild(cell("break_even", e ? fmtPct(e.break_even_hit_rate, 2) : dash,
                        e && e.break_even_hit_rate));
    tr.appendChild(cell("net_s_per_hour", e ? fmtSeconds(e.net_s_per_hour) : dash,
                        e && e.net_s_per_hour));
    tr.appendChild(cell("net_usd_per_hour", e ? fmtUsd(e.net_usd_per_hour) : dash,
                        e && e.net_usd_per_hour));
    tr.appendChild(cell("miss_overhead", e ? fmtSeconds(e.miss_overhead_s) : dash,
                        e && e.miss_overhead_s));
    tr.appendChild(cell("upstream", e ? fmtSeconds(e.upstream_s) : dash, e && e.upstream_s));
    const [label, cls, note] = stateOf(c);
    tr.appendChild(withAdjustment(cell("state", label, cls, "state state-" + cls), note));
    return tr;
  });
  replaceRows($("economics").querySelector("tbody"), econ, "No traffic yet.", 11);
  if (snap.economics_window_s) {
    $("economics-note").textContent = "Over the last " + fmtDuration(snap.economics_window_s) +
      " (economics window). A category pays while its hit rate stays above break-even.";
  }

  fillDatalist("tenants", snap.tenants);
  fillDatalist("models", snap.models);
  fillDatalist("categories-list", state.categories);
  fillCategorySelect(state.categories);
  if (interval) {
    $("charts-note").textContent = "Sampled in the proxy every " + fmtDuration(interval) +
      "; kept in memory for one hour (" + fmtInt(state.samples.length) +
      (state.samples.length === 1 ? " sample)." : " samples).");
  }
  renderCharts();
}

function fillDatalist(id, values) {
  const list = $(id);
  const now = Array.from(list.options).map((o) => o.value).join("\n");
  if (now === values.join("\n")) return;
  list.replaceChildren(...values.map((v) => { const o = el("option"); o.value = v; return o; }));
}

function fillCategorySelect(names) {
  const select = $("ex-category");
  const have = Array.from(select.options).slice(1).map((o) => o.value).join("\n");
  if (have === names.join("\n")) return;
  const chosen = select.value;
  select.replaceChildren(select.options[0],
    ...names.map((n) => { const o = el("option", n); o.value = n; return o; }));
  select.value = names.includes(chosen) ? chosen : "";
}

// -- charts: small inline SVG line charts -----------------------------------------------------
const SVG = "http://www.w3.org/2000/svg";

function svgEl(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text != null) node.textContent = text;
  return node;
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

// series: [{name, color, dashed, points: [[t, value|null], ...]}]
function lineChart(figure, series, { yMax, format, empty }) {
  const svg = figure.querySelector("svg");
  const width = Math.max(200, Math.round(svg.getBoundingClientRect().width) || 600);
  const height = 160, left = 64, right = 12, top = 10, bottom = 24;
  svg.setAttribute("viewBox", "0 0 " + width + " " + height);
  const nodes = [];
  const now = Date.now() / 1000;
  const first = state.samples.length ? state.samples[0].t - state.samples[0].seconds : now - 60;
  const t0 = Math.max(now - HOUR_S, Math.min(first, now - 60)), t1 = now;
  const top_ = yMax != null ? yMax : niceMax(Math.max(0, ...series.flatMap(
    (s) => s.points.map((p) => (p[1] == null ? 0 : p[1])))));
  const x = (t) => left + (width - left - right) * (t - t0) / (t1 - t0);
  const y = (v) => top + (height - top - bottom) * (1 - v / top_);
  for (const f of [0, 0.5, 1]) {
    nodes.push(svgEl("line", { x1: left, x2: width - right, y1: y(top_ * f), y2: y(top_ * f),
                               class: "grid" }));
    nodes.push(svgEl("text", { x: left - 6, y: y(top_ * f) + 4, "text-anchor": "end" },
                     format(top_ * f)));
  }
  nodes.push(svgEl("text", { x: left, y: height - 6 }, fmtClock(t0)));
  nodes.push(svgEl("text", { x: width - right, y: height - 6, "text-anchor": "end" }, fmtClock(t1)));
  let drawn = 0;
  for (const s of series) {
    // a path through consecutive values; a value alone between gaps is drawn as a dot
    const runs = [];
    let run = [];
    for (const [t, v] of s.points) {
      if (v == null || t < t0) { if (run.length) runs.push(run); run = []; continue; }
      run.push([x(t), y(Math.min(v, top_))]);
      drawn += 1;
    }
    if (run.length) runs.push(run);
    const d = runs.filter((r) => r.length > 1).map((r) => r.map(
      (p, i) => (i ? "L" : "M") + p[0].toFixed(1) + " " + p[1].toFixed(1)).join("")).join("");
    if (d) {
      const path = svgEl("path", { d, stroke: s.color, class: "series" + (s.dashed ? " dashed" : "") });
      path.appendChild(svgEl("title", {}, s.name));
      nodes.push(path);
    }
    for (const r of runs.filter((r) => r.length === 1)) {
      nodes.push(svgEl("circle", { cx: r[0][0].toFixed(1), cy: r[0][1].toFixed(1), r: 3,
                                   fill: s.color }));
    }
  }
  if (!drawn) {
    nodes.push(svgEl("text", { x: (left + width) / 2, y: height / 2, "text-anchor": "middle" },
                     empty));
  }
  svg.replaceChildren(...nodes);
  figure.dataset.points = String(drawn);
  const legend = figure.querySelector(".legend");
  legend.replaceChildren(...series.map((s) => {
    const li = el("li");
    const sw = el("span", null, "swatch");
    sw.style.backgroundColor = s.color;
    li.append(sw, s.name + (s.last != null ? ": " + s.last : ""));
    return li;
  }));
}

function lastValue(points, format) {
  for (let i = points.length - 1; i >= 0; i -= 1) if (points[i][1] != null) return format(points[i][1]);
  return null;
}

function renderCharts() {
  const samples = state.samples;
  const names = state.categories;
  const active = names.filter((name) => samples.some((s) => s.categories[name] &&
                                                             s.categories[name].lookups));
  const perCategory = (fn) => active.map((name) => {
    const points = samples.map((s) => [s.t, fn(s.categories[name], s)]);
    return { name, color: colorOf(name), points };
  });
  const hitRate = perCategory((d) => (d && d.lookups ? d.hit_rate * 100 : null));
  hitRate.forEach((s) => { s.last = lastValue(s.points, (v) => v.toFixed(1) + " %"); });
  lineChart($("chart-hit-rate"), hitRate,
            { yMax: 100, format: (v) => v.toFixed(0) + " %", empty: "No lookups yet" });
  const rate = perCategory((d, s) => (d ? d.lookups / s.seconds : 0));
  rate.forEach((s) => { s.last = lastValue(s.points, (v) => v.toFixed(2) + " /s"); });
  lineChart($("chart-requests"), rate,
            { format: (v) => v.toFixed(v < 10 ? 1 : 0) + " /s", empty: "No samples yet" });
  const models = Array.from(new Set(samples.flatMap((s) => Object.keys(s.levels)))).sort();
  const load = models.map((m, i) => ({
    name: m, color: PALETTE[(i + 3) % PALETTE.length],
    points: samples.map((s) => [s.t, s.levels[m] == null ? null : s.levels[m] * 100]) }));
  load.forEach((s) => { s.last = lastValue(s.points, (v) => v.toFixed(0) + " %"); });
  lineChart($("chart-load"), load, { yMax: 100, format: (v) => v.toFixed(0) + " %",
    empty: models.length ? "No samples yet" : "Load-adaptive control is off or idle" });
  const overhead = [
    { name: "p50", color: PALETTE[0], points: samples.map((s) => [s.t, s.overhead_p50]) },
    { name: "p99", color: PALETTE[1], dashed: true,
      points: samples.map((s) => [s.t, s.overhead_p99]) }];
  overhead.forEach((s) => { s.last = lastValue(s.points, fmtSeconds); });
  lineChart($("chart-overhead"), overhead, { format: fmtSeconds, empty: "No misses yet" });
}

// -- the search box ---------------------------------------------------------------------------
async function explain(event) {
  event.preventDefault();
  const form = event.target;
  const out = $("ex-decision");
  const body = { query: form.query.value, tenant: form.tenant.value.trim(),
                 model: form.model.value.trim() };
  if (form.category.value) body.category = form.category.value;
  out.textContent = "Looking…";
  let answer;
  try {
    answer = await api("/admin/explain", body);
  } catch (err) {
    if (err instanceof Unauthorized) { signOut("Signed out: " + err.message); return; }
    out.textContent = "Could not explain: " + err.message;
    $("candidates").querySelector("tbody").replaceChildren();
    return;
  }
  renderExplain(answer);
}

function renderExplain(a) {
  const out = $("ex-decision");
  out.dataset.decision = a.decision;
  out.dataset.reason = a.reason || "";
  const verdict = el("strong", a.decision.toUpperCase(), a.decision);
  const parts = [];
  if (a.decision === "hit") {
    parts.push((a.tier || "semantic") + " tier", "entry " + a.entry);
  } else {
    parts.push("reason: " + (a.reason || "unknown"));
  }
  if (a.similarity != null && a.tier === "exact") {
    parts.push("verbatim repeat");
  } else if (a.similarity != null) {
    parts.push("similarity " + fmtNum(a.similarity) +
               (a.threshold != null ? (a.similarity >= a.threshold ? " ≥ " : " < ") +
                "threshold " + fmtNum(a.threshold) : ""));
  } else if (a.threshold != null) {
    parts.push("threshold " + fmtNum(a.threshold));
  }
  if (a.probability != null) parts.push("P(match) " + fmtPct(a.probability));
  if (a.category) parts.push("category " + a.category);
  if (a.detail) parts.push(a.detail);
  if (a.verifier && a.verifier !== "none" && a.tier !== "exact") {
    const [low, high] = a.verify_band || [];
    parts.push("verifier " + a.verifier + " decides between " + fmtNum(low) + " and " +
               fmtNum(high) + " (serves at P ≥ " + fmtNum(a.cutoff, 2) + ")");
  }
  out.replaceChildren(verdict, " · " + parts.join(" · "));
  const rows = a.candidates.map((c) => {
    const tr = el("tr");
    if (c.entry) tr.dataset.entry = c.entry;
    tr.appendChild(cell("entry", c.entry || dash, c.entry, ""));
    tr.appendChild(cell("query", c.query == null ? dash : c.query, null, "text"));
    tr.appendChild(cell("similarity", fmtNum(c.similarity), c.similarity));
    tr.appendChild(cell("probability", c.probability == null ? dash : fmtPct(c.probability),
                        c.probability));
    tr.appendChild(cell("outcome", c.outcome || dash, c.outcome, ""));
    tr.appendChild(cell("detail", c.detail || dash, null, "text"));
    const actions = el("td");
    if (c.entry) {
      const inv = el("button", "Invalidate", "small danger");
      inv.type = "button";
      inv.dataset.action = "invalidate";
      inv.setAttribute("aria-label", "Invalidate entry " + c.entry);
      inv.addEventListener("click", () => act("/admin/invalidate", { entry: c.entry },
        (r) => "Invalidated entry " + c.entry + " (" + fmtInt(r.deleted) + " deleted)", true));
      const wrong = el("button", "Mark wrong", "small quiet");
      wrong.type = "button";
      wrong.dataset.action = "feedback";
      wrong.setAttribute("aria-label", "Report entry " + c.entry + " as a wrong hit");
      wrong.addEventListener("click", () => act("/admin/feedback", { entry: c.entry },
        (r) => "Reported entry " + r.entry + " as a wrong hit (" + r.category + "); removed", true));
      actions.append(inv, " ", wrong);
    }
    tr.appendChild(actions);
    return tr;
  });
  replaceRows($("candidates").querySelector("tbody"), rows,
              "No entries in this tenant's partition for this category.", 7);
}

// -- actions --------------------------------------------------------------------------------
async function act(path, body, describe, reexplain) {
  const out = $("action-result");
  try {
    const answer = await api(path, body);
    out.textContent = describe(answer);
    out.dataset.ok = "true";
  } catch (err) {
    if (err instanceof Unauthorized) { signOut("Signed out: " + err.message); return; }
    out.textContent = "Failed: " + err.message;
    out.dataset.ok = "false";
  }
  try { await refresh(); } catch (_) { /* the next poll reports it */ }
  if (reexplain && $("ex-query").value) $("explain-form").requestSubmit();
}

function invalidate(event) {
  event.preventDefault();
  const kind = $("inv-kind").value, value = $("inv-value").value.trim();
  const button = $("inv-submit");
  if (state.pending !== kind + "=" + value) {  // a second press confirms
    state.pending = kind + "=" + value;
    button.textContent = "Press again to confirm";
    $("action-result").textContent = "This deletes every entry with " + kind + " " + value +
      ". Press the button again to confirm.";
    return;
  }
  state.pending = null;
  button.textContent = "Invalidate";
  act("/admin/invalidate", { [kind]: value },
      (r) => "Invalidated " + fmtInt(r.deleted) + " entries with " + kind + " " + value, false);
}

function resetConfirm() {
  state.pending = null;
  $("inv-submit").textContent = "Invalidate";
}

function feedback(event) {
  event.preventDefault();
  const body = { entry: $("fb-entry").value.trim() };
  if ($("fb-reason").value.trim()) body.reason = $("fb-reason").value.trim();
  act("/admin/feedback", body,
      (r) => "Reported entry " + r.entry + " as a wrong hit (" + r.category + "); removed", false);
}

// -- wiring ---------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    $("token").value = "";
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("login-error").textContent = "";
    start();
  });
  $("logout").addEventListener("click", () => signOut(""));
  $("show-idle").addEventListener("change", (event) => {
    $("app").classList.toggle("show-idle", event.target.checked);
  });
  $("explain-form").addEventListener("submit", explain);
  $("invalidate-form").addEventListener("submit", invalidate);
  $("inv-kind").addEventListener("change", () => {
    resetConfirm();
    const lists = { category: "categories-list", model: "models", tenant: "tenants", entry: "" };
    $("inv-value").setAttribute("list", lists[$("inv-kind").value]);
  });
  $("inv-value").addEventListener("input", resetConfirm);
  $("feedback-form").addEventListener("submit", feedback);
  window.addEventListener("resize", () => { if (!$("app").hidden) renderCharts(); });
  if (sessionStorage.getItem(TOKEN_KEY)) start(); else $("token").focus();
});
