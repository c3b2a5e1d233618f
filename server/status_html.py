"""The status page: one HTML document with its CSS and JS inline (no build, no assets).

Kept in a Python module so it ships inside the package like any code. The script fetches
`status.json` (relative, so the page also works behind a path prefix) every two seconds and
builds the DOM with `textContent` only: names, labels and errors come from pods and must
never be read as HTML.
"""

from __future__ import annotations

from typing import Final

PAGE: Final = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>datalayer status</title>
<style>
:root { --stale: #c5221f; --stale-bg: #fce8e6; --degraded: #b06000; --degraded-bg: #fef7e0;
  --fresh: #188038; --muted: #5f6368; --line: #dadce0; }
* { box-sizing: border-box; }
body { font: 13px/1.4 system-ui, -apple-system, "DejaVu Sans", sans-serif; margin: 0;
  color: #202124; background: #fff; }
header { display: flex; flex-wrap: wrap; gap: 6px 18px; align-items: baseline;
  padding: 10px 16px; border-bottom: 1px solid var(--line); background: #f8f9fa; }
header h1 { font-size: 16px; margin: 0; }
main { padding: 0 16px 24px; }
h2 { font-size: 14px; margin: 18px 0 6px; }
.muted { color: var(--muted); }
.pill { display: inline-block; padding: 0 7px; border-radius: 9px; font-weight: 600;
  color: #fff; }
.pill.stale { background: var(--stale); }
.pill.degraded { background: var(--degraded); }
.pill.fresh { background: var(--fresh); }
.pill.zero { background: #e8eaed; color: var(--muted); }
#banner { display: none; padding: 6px 16px; background: var(--stale); color: #fff; }
#banner.shown { display: block; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 3px 8px; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { background: #f1f3f4; font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.state-stale td { background: var(--stale-bg); }
tr.state-stale td:first-child { box-shadow: inset 4px 0 var(--stale); }
tr.state-degraded td { background: var(--degraded-bg); }
tr.state-degraded td:first-child { box-shadow: inset 4px 0 var(--degraded); }
tr.state-fresh td:first-child { box-shadow: inset 4px 0 var(--fresh); }
td.error { color: var(--stale); max-width: 420px; overflow-wrap: anywhere; }
.lane { white-space: nowrap; }
.lane.bad { color: var(--stale); }
.kv-high { color: var(--stale); font-weight: 600; }
.filters { margin: 10px 0 4px; display: flex; gap: 10px; align-items: center; }
input[type=text] { font: inherit; padding: 2px 6px; width: 200px; }
pre { background: #f8f9fa; border: 1px solid var(--line); padding: 8px; overflow: auto;
  max-height: 360px; margin: 0; }
</style>
</head>
<body>
<header>
  <h1>datalayer</h1>
  <span id="counts"></span>
  <span class="muted" id="instance"></span>
  <span class="muted" id="updated">loading&hellip;</span>
</header>
<div id="banner"></div>
<main>
  <div class="filters">
    <label>name contains <input type="text" id="q"></label>
    <label>label selector <input type="text" id="selector" placeholder="app=vllm"></label>
    <label><input type="checkbox" id="auto" checked> refresh every 2s</label>
  </div>
  <h2>Endpoints <span class="muted" id="shown"></span></h2>
  <table id="endpoints">
    <thead><tr><th>name</th><th>state</th><th>engine</th><th>address</th>
      <th class="num">waiting</th><th class="num">running</th><th class="num">KV</th>
      <th>LoRA adapters</th><th class="num">data age</th><th>collector lanes</th>
      <th>last error</th></tr></thead>
    <tbody></tbody>
  </table>
  <h2>Subscribers <span class="muted" id="subs-summary"></span></h2>
  <table id="subscribers">
    <thead><tr><th>selector</th><th>names</th><th>parts</th>
      <th class="num">min interval</th><th class="num">heartbeat</th>
      <th class="num">pending</th><th class="num">known</th></tr></thead>
    <tbody></tbody>
  </table>
  <h2>Configuration <span class="muted" id="config-file"></span></h2>
  <p id="config-summary"></p>
  <pre id="config"></pre>
</main>
<script>
"use strict";
const REFRESH_MS = 2000;
let refreshes = 0;
let timer = null;

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "class") node.className = value; else node.setAttribute(key, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  if (seconds < 10) return seconds.toFixed(1) + "s";
  if (seconds < 60) return Math.round(seconds) + "s";
  if (seconds < 3600) return Math.floor(seconds / 60) + "m" +
    String(Math.floor(seconds % 60)).padStart(2, "0") + "s";
  return Math.floor(seconds / 3600) + "h" +
    String(Math.floor(seconds % 3600 / 60)).padStart(2, "0") + "m";
}

// A value the server does not know is null in /status.json: shown as "-", never as 0.
function num(v) { return v === null || v === undefined ? "-" : String(v); }

function lora(e) {
  if (e.max_active_models === null) return "-";
  if (!e.active_models.length && !e.waiting_models.length && !e.max_active_models) return "-";
  let text = e.active_models.join(", ") || "none";
  if (e.max_active_models) text += " (" + e.active_models.length + "/" +
    e.max_active_models + ")";
  if (e.waiting_models.length) text += "; waiting: " + e.waiting_models.join(", ");
  return text;
}

function lanes(e) {
  const cell = el("td");
  for (const lane of e.lanes) {
    const ok = lane.since_success === null ? "never read" : "ok " + age(lane.since_success) +
      " ago";
    const kind = lane.event_driven ? "pushed" : "polls";
    cell.append(el("div", {class: "lane" + (lane.stale ? " bad" : "")},
      lane.source + ": " + lane.polls + " " + kind + ", " + ok));
  }
  if (!e.lanes.length) cell.append("no source selects it");
  return cell;
}

function endpointRow(e) {
  const known = e.kv !== null && e.kv !== undefined;
  const kv = el("td", {class: "num" + (known && e.kv >= 0.9 ? " kv-high" : "")},
    known ? (e.kv * 100).toFixed(0) + "%" : "-");
  return el("tr", {class: "state-" + e.state, "data-name": e.name, "data-state": e.state},
    el("td", {}, e.name), el("td", {}, el("span", {class: "pill " + e.state}, e.state)),
    el("td", {}, e.engine), el("td", {}, e.address),
    el("td", {class: "num"}, num(e.waiting)), el("td", {class: "num"}, num(e.running)), kv,
    el("td", {}, lora(e)), el("td", {class: "num"}, age(e.age)), lanes(e),
    el("td", {class: "error"}, e.last_error || ""));
}

function configSummary(cfg) {
  const d = cfg.discovery;
  const sources = cfg.sources.map(src => src.name + " every " +
    +(src.interval * 1000).toFixed(3) + "ms \u2192 " +
    (src.extractors.map(e => e.name).join(" + ") || "no extractors") +
    (src.selector ? " [" + src.selector + "]" : ""));
  return "discovery " + (d ? d.name + " (" + d.type + ")" : "-") + " \u00b7 sources: " +
    sources.join("; ") + " \u00b7 stale after " + cfg.staleness_threshold + "s" +
    (cfg.warnings.length ? " \u00b7 warnings: " + cfg.warnings.join("; ") : "");
}

function pill(state, count) {
  return el("span", {class: "pill " + (count ? state : "zero")}, count + " " + state);
}

function render(s) {
  const c = s.counts;
  document.getElementById("counts").replaceChildren(
    c.total + " endpoints ", pill("stale", c.stale), " ", pill("degraded", c.degraded), " ",
    pill("fresh", c.fresh));
  document.getElementById("instance").textContent = "revision " + s.revision +
    " \\u00b7 up " + age(s.uptime_seconds) + " \\u00b7 instance " + s.instance_id.slice(0, 8) +
    (s.synced ? "" : " \\u00b7 discovery not synced yet");
  document.getElementById("shown").textContent = (c.matching < c.total ? c.matching +
    " matching, " : "") + (s.endpoints.length < c.matching ? "worst " + s.endpoints.length +
    " shown" : "") + " (worst first)";
  document.querySelector("#endpoints tbody").replaceChildren(...s.endpoints.map(endpointRow));
  const subs = s.subscribers;
  document.getElementById("subs-summary").textContent = subs.count + " open Watch streams" +
    " (limit " + subs.limit + ") \\u00b7 " + subs.events_sent + " events sent, " +
    subs.coalesced + " coalesced \\u00b7 " + s.collector.tasks + " collector tasks, " +
    s.collector.polls + " polls";
  document.querySelector("#subscribers tbody").replaceChildren(...subs.streams.map(w =>
    el("tr", {}, el("td", {}, w.selector || "(all)"), el("td", {}, w.names || "any"),
      el("td", {}, w.parts.join(", ") || "all"), el("td", {class: "num"}, w.min_interval + "s"),
      el("td", {class: "num"}, w.heartbeat_interval + "s"), el("td", {class: "num"}, w.pending),
      el("td", {class: "num"}, w.known))));
  if (!subs.streams.length) {
    document.querySelector("#subscribers tbody").append(
      el("tr", {}, el("td", {colspan: "7", class: "muted"}, "no open Watch streams")));
  }
  document.getElementById("config-file").textContent = s.config.file + " (" + s.config.kind +
    ")";
  document.getElementById("config-summary").textContent = configSummary(s.config);
  document.getElementById("config").textContent = JSON.stringify(s.config, null, 2);
}

async function refresh() {
  const banner = document.getElementById("banner");
  const params = new URLSearchParams({q: document.getElementById("q").value,
    selector: document.getElementById("selector").value});
  try {
    const response = await fetch("status.json?" + params, {cache: "no-store"});
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    render(body);
    refreshes += 1;
    document.body.dataset.refreshes = refreshes;
    document.getElementById("updated").textContent = "updated " +
      new Date(body.generated_at * 1000).toLocaleTimeString();
    banner.className = "";
  } catch (error) {
    banner.textContent = "status.json: " + error.message + " (showing the last data received)";
    banner.className = "shown";
  }
  schedule();
}

function schedule() {
  clearTimeout(timer);
  if (document.getElementById("auto").checked) timer = setTimeout(refresh, REFRESH_MS);
}

document.getElementById("auto").addEventListener("change", schedule);
for (const id of ["q", "selector"]) {
  document.getElementById(id).addEventListener("change", refresh);
}
refresh();
</script>
</body>
</html>
"""
