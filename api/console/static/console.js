// StreamForge console: one page, five views (#/plant, #/registry, #/device/<name>,
// #/alarms, #/pipeline), plain JavaScript, no build step. Every request carries the key
// the login form stored in sessionStorage, so the API's roles and tenant
// isolation apply as they do to curl. Live updates: /console/api/live (SSE,
// read with fetch because EventSource cannot send a header).
"use strict";

const KEY = "streamforge.key";
const state = { me: null, plant: new Map(), alarms: new Map(), live: null, view: null, chart: null };
// Arrival time of each alarm transition in the page (the browser tests read it).
window.__alarmSeen = {};
window.__liveReady = false;

const $ = (sel, root = document) => root.querySelector(sel);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const main = () => $("#main");

function notice(text) {
  const n = $("#notice");
  n.textContent = text || "";
  n.hidden = !text;
}

async function api(path, options = {}) {
  const headers = { "X-API-Key": sessionStorage.getItem(KEY) || "", ...(options.headers || {}) };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { ...options, headers, body: options.body && JSON.stringify(options.body) });
  if (r.status === 401) { logout("Your key was refused: log in again."); throw new Error("401"); }
  const body = r.headers.get("content-type")?.includes("json") ? await r.json() : await r.text();
  if (!r.ok) {
    const err = new Error(`${r.status}: ${body.message || body.detail || body}`);
    err.status = r.status;
    throw err;
  }
  return body;
}

function age(ts) {
  if (!ts) return "–";
  return seconds((Date.now() - new Date(ts)) / 1000);
}

function seconds(s) {
  s = Math.max(0, s);
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n.toFixed(0)} ${units[i]}`;
}

function fmt(v) {
  if (typeof v === "number") return Math.abs(v) >= 1000 ? v.toFixed(0) : v.toPrecision(4).replace(/\.?0+$/, "");
  if (v !== null && typeof v === "object") return esc(JSON.stringify(v)); // an event's JSON value
  return esc(v);
}

// ---- login ---------------------------------------------------------------------
function showLogin(message) {
  $("#nav").hidden = true;
  $("#logout").hidden = true;
  $("#who").textContent = "";
  main().innerHTML = `<form class="login" id="login-form">
    <h2>Log in</h2>
    <p class="muted">Paste an API key (<code>python -m api.keys create</code>); it is kept for this browser tab only.</p>
    <label>API key <input id="key" name="key" autocomplete="off" required></label>
    <button type="submit">Log in</button>
    <p id="login-error" class="raised">${esc(message || "")}</p></form>`;
  $("#login-form").onsubmit = async (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY, $("#key").value.trim());
    try {
      await start();
    } catch (err) {
      sessionStorage.removeItem(KEY);
      showLogin(`Log-in failed (${err.message}).`);
    }
  };
}

function logout(message) {
  sessionStorage.removeItem(KEY);
  if (state.live) state.live.abort();
  state.live = null;
  showLogin(message);
}

async function start() {
  state.me = await api("/console/api/me");
  $("#who").textContent = `${state.me.tenant} · ${state.me.role}`;
  $("#nav").hidden = false;
  $("#logout").hidden = false;
  connectLive();
  if (!location.hash || location.hash === "#/login") location.hash = "#/plant";
  else route();
}

const can = (role) => ["viewer", "operator", "admin"].indexOf(state.me?.role) >= ["viewer", "operator", "admin"].indexOf(role);

// ---- live stream ----------------------------------------------------------------
async function connectLive() {
  if (state.live) return;
  const ctl = new AbortController();
  state.live = ctl;
  try {
    const r = await fetch("/console/api/live", { headers: { "X-API-Key": sessionStorage.getItem(KEY) }, signal: ctl.signal });
    if (!r.ok) throw new Error(`live ${r.status}`);
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        let kind = "message", data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event: ")) kind = line.slice(7);
          else if (line.startsWith("data: ")) data += line.slice(6);
        }
        if (data) onLive(kind, JSON.parse(data));
      }
    }
  } catch (err) {
    if (ctl.signal.aborted) return;
  } finally {
    window.__liveReady = false;
    $("#live").className = "live off";
  }
  if (state.live === ctl) { state.live = null; setTimeout(connectLive, 2000); } // reconnect
}

function onLive(kind, data) {
  if (kind === "ready") { window.__liveReady = true; $("#live").className = "live on"; return; }
  if (kind === "resync") { route(); return; }
  if (kind === "alarm") {
    state.alarms.set(data.id, data);
    const dev = state.plant.get(data.device);
    if (dev) {
      dev.active_alarms = dev.active_alarms.filter((a) => a.id !== data.id);
      if (data.state !== "cleared") dev.active_alarms.push(data);
    }
  }
  if (kind === "readings") {
    for (const r of data) {
      const dev = state.plant.get(r.device);
      if (!dev) continue;
      const v = dev.values.find((x) => x.metric === r.metric);
      if (v) Object.assign(v, { ts: r.ts, value: r.value, score: r.score });
      else dev.values.push({ metric: r.metric, ts: r.ts, value: r.value, score: r.score });
      dev.last_seen = r.ts;
      dev.status = "online";
    }
  }
  state.view?.live?.(kind, data);
  // After the view has drawn it: what the latency test measures.
  if (kind === "alarm") window.__alarmSeen[`${data.id}:${data.seq}`] = performance.timeOrigin + performance.now();
}

// ---- Plant ------------------------------------------------------------------------
async function plantView() {
  main().innerHTML = `<h2>Plant</h2><div class="toolbar">
    <input id="filter" placeholder="filter: device, metric or status" size="36">
    <span class="muted" id="plant-count"></span></div>
    <table id="plant"><thead><tr><th>Device</th><th>Status</th><th>Last seen</th>
    <th>Latest values</th><th>Active alarms</th></tr></thead><tbody></tbody></table>`;
  const rows = await api("/console/api/plant");
  state.plant = new Map(rows.map((d) => [d.device, d]));
  const draw = () => {
    const q = $("#filter")?.value.trim().toLowerCase() || "";
    const shown = [...state.plant.values()].filter((d) => !q || d.device.toLowerCase().includes(q)
      || d.status === q || d.values.some((v) => v.metric.toLowerCase().includes(q)));
    const tbody = $("#plant tbody");
    if (!tbody) return;
    tbody.innerHTML = shown.map((d) => `<tr data-device="${esc(d.device)}">
      <td><a href="#/device/${encodeURIComponent(d.device)}">${esc(d.device)}</a></td>
      <td><span class="badge ${d.status}">${d.status}</span></td><td>${age(d.last_seen)}</td>
      <td class="values">${d.values.map((v) => `<span>${esc(v.metric)} <b>${fmt(v.value)}</b>${v.unit ? " " + esc(v.unit) : ""}</span>`).join("")}</td>
      <td>${d.active_alarms.map((a) => `<span class="badge ${esc(a.severity)}">${esc(a.rule)}</span>`).join(" ")}</td></tr>`).join("");
    $("#plant-count").textContent = `${shown.length} of ${state.plant.size} devices`;
  };
  $("#filter").oninput = draw;
  draw();
  let pending = false;
  return { live: () => { if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; draw(); }); } } };
}

// ---- Registry ---------------------------------------------------------------------
// GET /devices as it is: registered, discovered (seen, never registered) and
// decommissioned devices, their status, metadata, last values (out of their
// registered range marked) and active alarms; the filters are the API's own.
const REGISTRATIONS = ["registered", "discovered", "decommissioned"];
const STATUSES = ["online", "stale", "offline", "unknown"];

function registryRow(d) {
  const values = Object.entries(d.last_values).map(([m, v]) => {
    const out = v.in_range === false;
    return `<span data-metric="${esc(m)}" class="${out ? "out-of-range" : ""}"${out ? ' title="outside its registered range"' : ""}>${esc(m)} <b>${fmt(v.value)}</b>${v.unit ? " " + esc(v.unit) : ""}${out ? " ⚠" : ""}</span>`;
  }).join("");
  // A device never seen has no page of data to open.
  const name = d.last_seen ? `<a href="#/device/${encodeURIComponent(d.device)}">${esc(d.device)}</a>` : esc(d.device);
  return `<tr data-device="${esc(d.device)}" data-registration="${esc(d.registration)}" data-status="${esc(d.status)}">
    <td>${name}</td><td>${esc(d.name || "")}</td>
    <td><span class="badge reg-${esc(d.registration)}">${esc(d.registration)}</span></td>
    <td><span class="badge ${esc(d.status)}">${esc(d.status)}</span></td>
    <td>${esc(d.type || "")}</td><td>${esc(d.area || "")}</td>
    <td>${d.tags.map((t) => `<span class="tag">${esc(t)}</span>`).join(" ")}</td>
    <td class="values">${values}</td>
    <td class="alarms">${d.active_alarms ? `<span class="badge major">${d.active_alarms}</span>` : "0"}</td>
    <td>${age(d.last_seen)}</td></tr>`;
}

async function registryView() {
  const options = (names) => `<option value="">all</option>${names.map((n) => `<option>${n}</option>`).join("")}`;
  main().innerHTML = `<h2>Device registry</h2><div class="toolbar">
    <label>Registration <select id="reg-registration">${options(REGISTRATIONS)}</select></label>
    <label>Status <select id="reg-status">${options(STATUSES)}</select></label>
    <span class="muted" id="reg-count"></span></div>
    <table id="registry"><thead><tr><th>Device</th><th>Name</th><th>Registration</th><th>Status</th><th>Type</th>
    <th>Area</th><th>Tags</th><th>Last values</th><th>Active alarms</th><th>Last seen</th></tr></thead><tbody></tbody></table>
    <button id="reg-more" hidden>Load more</button>`;
  let cursor = null;
  const load = async (more) => {
    const q = new URLSearchParams({ limit: 500 });
    for (const [param, id] of [["registration", "#reg-registration"], ["status", "#reg-status"]]) {
      if ($(id).value) q.set(param, $(id).value);
    }
    const query = q.toString();
    if (more && cursor) q.set("cursor", cursor);
    const page = await api(`/devices?${q}`);
    const table = $("#registry");
    if (!table) return; // the view was left meanwhile
    cursor = page.next_cursor;
    const rows = page.items.map(registryRow).join("");
    const tbody = $("#registry tbody");
    if (more) tbody.insertAdjacentHTML("beforeend", rows);
    else tbody.innerHTML = rows || `<tr><td colspan="10" class="muted">No devices match.</td></tr>`;
    $("#reg-more").hidden = !cursor;
    $("#reg-count").textContent = `${tbody.querySelectorAll("tr[data-device]").length} devices${cursor ? ", more to load" : ""}`;
    table.dataset.query = query; // what is shown (the browser tests wait for it)
  };
  const reload = () => load(false).catch((err) => notice(`Could not load: ${err.message}`));
  $("#reg-registration").onchange = reload;
  $("#reg-status").onchange = reload;
  $("#reg-more").onclick = () => load(true).catch((err) => notice(`Could not load: ${err.message}`));
  await load(false);
  return {};
}

// ---- Device -----------------------------------------------------------------------
const RANGES = { "15m": 900, "1h": 3600, "6h": 21600, "24h": 86400, "7d": 604800 };

async function deviceView(device) {
  const range = sessionStorage.getItem("streamforge.range") || "1h";
  main().innerHTML = `<h2>Device ${esc(device)}</h2><div class="toolbar">
    <label>Range <select id="range">${Object.keys(RANGES).map((r) => `<option ${r === range ? "selected" : ""}>${r}</option>`).join("")}</select></label>
    <span class="muted" id="source"></span></div><div id="charts"></div>
    <h2>Alarms</h2><table id="device-alarms"><thead><tr><th>Raised</th><th>Rule</th><th>Severity</th><th>State</th><th>Message</th></tr></thead><tbody></tbody></table>
    <h2>Events</h2><table id="events"><thead><tr><th>Time</th><th>Metric</th><th>From</th><th>To</th></tr></thead><tbody></tbody></table>`;
  $("#range").onchange = (e) => { sessionStorage.setItem("streamforge.range", e.target.value); route(); };
  const end = new Date();
  const seconds = RANGES[range];
  const startT = new Date(end - seconds * 1000);
  const q = (o) => new URLSearchParams(o).toString();
  const info = await api(`/devices/${encodeURIComponent(device)}`);
  const [alarms, events] = await Promise.all([
    api(`/alarms?${q({ device, limit: 200 })}`),
    api(`/events?${q({ device, start: startT.toISOString(), limit: 50 })}`),
  ]);
  $("#device-alarms tbody").innerHTML = alarms.items.map((a) => `<tr><td>${new Date(a.raised_at).toLocaleString()}</td>
    <td>${esc(a.rule)}</td><td><span class="badge ${esc(a.severity)}">${esc(a.severity)}</span></td>
    <td class="${esc(a.state)}">${esc(a.state)}</td><td>${esc(a.message)}</td></tr>`).join("");
  $("#events tbody").innerHTML = events.items.map((e) => `<tr><td>${new Date(e.ts).toLocaleString()}</td>
    <td>${esc(e.metric)}</td><td>${esc(JSON.stringify(e.previous))}</td><td>${esc(JSON.stringify(e.value))}</td></tr>`).join("");
  // Raw readings up to an hour; rollups beyond (1m, 5m or 1h windows: a few hundred points).
  const raw = seconds <= 3600;
  const tier = seconds <= 21600 ? "1m" : seconds <= 86400 ? "5m" : "1h";
  $("#source").textContent = raw ? "raw readings, live" : `${tier} rollups: mean, min–max band`;
  const marks = alarms.items.flatMap((a) => [[a.raised_at, "#d0342c"], [a.cleared_at, "#2e9b4f"]])
    .filter(([t]) => t).map(([t, c]) => [new Date(t) / 1000, c]);
  const charts = [];
  for (const metric of info.metrics) {
    const div = document.createElement("div");
    div.className = "chart";
    div.dataset.metric = metric;
    $("#charts").append(div);
    const params = { device, metric, start: startT.toISOString(), end: end.toISOString(), limit: 10000 };
    let data, series;
    if (raw) {
      const page = await api(`/readings?${q(params)}`);
      const pts = page.items.filter((r) => typeof r.value === "number");
      data = [pts.map((r) => new Date(r.ts) / 1000), pts.map((r) => r.value), pts.map((r) => r.score)];
      series = [{}, { label: metric, stroke: "#1f6fd1" }, { label: "anomaly score", stroke: "#c77c02", scale: "score" }];
    } else {
      const page = await api(`/rollups?${q({ ...params, tier })}`);
      const w = page.items;
      data = [w.map((r) => new Date(r.window_start) / 1000), w.map((r) => r.min), w.map((r) => r.max), w.map((r) => r.mean)];
      series = [{}, { label: "min", stroke: "#9fbfe8" }, { label: "max", stroke: "#9fbfe8" }, { label: `${metric} mean`, stroke: "#1f6fd1" }];
    }
    const opts = {
      title: metric, width: Math.max(400, $("#charts").clientWidth - 20), height: 220, series,
      scales: { x: { time: true, range: [startT / 1000, end / 1000] }, score: { range: [0, 1] } },
      axes: [{}, {}, ...(raw ? [{ scale: "score", side: 1, grid: { show: false } }] : [])],
      bands: raw ? [] : [{ series: [2, 1], fill: "rgba(31,111,209,0.12)" }],
      hooks: { draw: [(u) => drawMarks(u, marks)] },
    };
    charts.push({ metric, plot: new uPlot(opts, data, div), data, raw });
    div.dataset.points = String(data[0].length);
  }
  state.chart = charts;
  return {
    live: (kind, data) => {
      if (kind !== "readings") return;
      for (const r of data) {
        const c = charts.find((x) => x.raw && r.device === device && x.metric === r.metric);
        if (!c || typeof r.value !== "number") continue;
        c.data[0].push(new Date(r.ts) / 1000); c.data[1].push(r.value); c.data[2].push(r.score);
        const now = Date.now() / 1000;
        c.plot.setScale("x", { min: now - seconds, max: now });
        c.plot.setData(c.data, false);
      }
    },
  };
}

function drawMarks(u, marks) {
  const ctx = u.ctx;
  ctx.save();
  for (const [t, color] of marks) {
    const x = u.valToPos(t, "x", true);
    if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath(); ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height); ctx.stroke();
  }
  ctx.restore();
}

// ---- Alarms -----------------------------------------------------------------------
async function alarmsView() {
  main().innerHTML = `<h2>Active alarms</h2><table id="active"><thead><tr><th>Severity</th><th>Priority</th><th>Device</th>
    <th>Metric</th><th>Rule</th><th>State</th><th>Age</th><th>Message</th><th></th></tr></thead><tbody></tbody></table>
    <h2>History</h2><table id="history"><thead><tr><th>Raised</th><th>Severity</th><th>Device</th><th>Rule</th>
    <th>State</th><th>By</th><th>Message</th></tr></thead><tbody></tbody></table>`;
  const [active, history] = await Promise.all([api("/alarms?state=active&limit=500"), api("/alarms?limit=100")]);
  for (const a of [...history.items, ...active.items]) state.alarms.set(a.id, a);
  const shelved = (a) => a.shelved_until && new Date(a.shelved_until) > Date.now();
  const actions = (a) => {
    // A flood alarm ends by itself: the API takes no operator action on it.
    if (a.state === "cleared" || a.kind === "flood") return "";
    const ack = a.state === "raised" ? `<button data-act="acknowledge" data-id="${esc(a.id)}">Acknowledge</button>` : "";
    const shelve = shelved(a) ? `<button data-act="unshelve" data-id="${esc(a.id)}">Unshelve</button>`
      : `<button data-act="shelve" data-id="${esc(a.id)}">Shelve 1 h</button>`;
    return `${ack} <button data-act="clear" data-id="${esc(a.id)}">Clear</button> ${shelve}`;
  };
  const draw = () => {
    const all = [...state.alarms.values()].sort((x, y) => new Date(y.raised_at) - new Date(x.raised_at));
    const body = $("#active tbody");
    if (!body) return;
    body.innerHTML = all.filter((a) => a.state !== "cleared").map((a) => `<tr data-id="${esc(a.id)}">
      <td><span class="badge ${esc(a.severity)}">${esc(a.severity)}</span></td><td>${esc(a.priority || "")}${a.chattering ? " · chattering" : ""}</td>
      <td>${esc(a.device)}</td><td>${esc(a.metric)}</td>
      <td>${esc(a.rule)}</td><td class="state ${esc(a.state)}">${esc(a.state)}</td>${""
      }<td>${age(a.raised_at)}${shelved(a) ? `<br><span class="muted shelved-until">shelved until ${new Date(a.shelved_until).toLocaleTimeString()}</span>` : ""}</td>
      <td>${esc(a.message)}</td><td>${actions(a)}</td></tr>`).join("");
    $("#history tbody").innerHTML = all.slice(0, 100).map((a) => `<tr><td>${new Date(a.raised_at).toLocaleString()}</td>
      <td><span class="badge ${esc(a.severity)}">${esc(a.severity)}</span></td><td>${esc(a.device)}</td><td>${esc(a.rule)}</td>
      <td class="${esc(a.state)}">${esc(a.state)}</td><td>${esc(a.acknowledged_by || "")}</td><td>${esc(a.message)}</td></tr>`).join("");
  };
  $("#active").onclick = async (e) => {
    const b = e.target.closest("button[data-act]");
    if (!b) return;
    let body = {};
    if (b.dataset.act === "shelve") {
      const comment = prompt("Why shelve this alarm for an hour?");
      if (!comment) return;
      body = { minutes: 60, comment };
    }
    b.disabled = true;
    try {
      const a = await api(`/alarms/${encodeURIComponent(b.dataset.id)}/${b.dataset.act}`, { method: "POST", body });
      state.alarms.set(a.id, a);
      notice("");
      draw();
    } catch (err) {
      b.disabled = false;
      notice(err.status === 403 ? `Not allowed: a ${state.me.role} cannot ${b.dataset.act} alarms (403).` : `Failed: ${err.message}`);
    }
  };
  draw();
  return { live: (kind) => { if (kind === "alarm") draw(); } };
}

// ---- Pipeline -----------------------------------------------------------------------
async function pipelineView() {
  main().innerHTML = `<h2>Flows</h2><table id="flows"><thead><tr><th>Flow</th><th>Status</th><th>Wanted</th>
    <th>Uptime</th><th>Restarts</th><th>Last error</th><th></th></tr></thead><tbody></tbody></table>
    <h2>Flow processes</h2><table id="processes"><thead><tr><th>Metrics at</th><th>Up</th><th>Readings/s</th>
    <th>Dead letters/s</th><th>Kafka lag</th><th>Writer queue</th><th>Errors</th></tr></thead><tbody></tbody></table>
    <h2>Gateways</h2><table id="gateways"><thead><tr><th>Metrics at</th><th>Up</th><th>Spooled records</th>
    <th>Spooled bytes</th><th>Oldest record</th><th>Forwarded/s</th><th>Dropped</th><th>Forward failures</th>
    <th>Warnings</th></tr></thead><tbody></tbody></table>
    <h2>Latest dead letters</h2><table id="dead"><thead><tr><th>Received</th><th>Source</th><th>Step</th>
    <th>Reason</th><th>Payload</th></tr></thead><tbody></tbody></table>`;
  let last = null, timer = null;
  const refresh = async () => {
    if (!$("#flows")) { clearInterval(timer); return; }
    const flows = await api("/flows");
    $("#flows tbody").innerHTML = flows.map((f) => `<tr><td>${esc(f.name)}</td><td class="${f.status === "crashed" ? "raised" : ""}">${esc(f.status)}</td>
      <td>${esc(f.desired)}</td><td>${f.uptime_s == null ? "–" : Math.round(f.uptime_s) + " s"}</td><td>${f.restarts}</td>
      <td>${esc((f.last_error || "").slice(0, 120))}</td><td>${can("admin") ? ["start", "stop", "restart"].map((a) =>
        `<button data-flow="${esc(f.name)}" data-act="${a}">${a}</button>`).join(" ") : ""}</td></tr>`).join("")
      || `<tr><td colspan="7" class="muted">No flows defined through the API.</td></tr>`;
    if (can("admin")) {
      const now = performance.now() / 1000;
      const [procs, gws] = await Promise.all([api("/console/api/pipeline"), api("/console/api/gateways")]);
      const dt = last ? now - last.t : 0;
      // A counter's change between two polls over the time between them; "–" until there are two.
      const rater = (prevs) => (p, k) => {
        const prev = prevs?.find((x) => x.target === p.target);
        return prev && p.up && prev.up && dt > 0 ? (Math.max(0, p[k] - prev[k]) / dt).toFixed(1) : "–";
      };
      const down = (p) => `<span class="raised" title="${esc(p.error)}">down</span>`;
      const rate = rater(last?.procs);
      $("#processes tbody").innerHTML = procs.map((p) => `<tr><td>${esc(p.target)}</td><td>${p.up ? "up" : down(p)}</td>
          <td>${rate(p, "readings")}</td><td>${rate(p, "dead_letters")}</td><td>${p.up ? p.kafka_lag : "–"}</td>
          <td>${p.up ? p.writer_queued : "–"}</td><td>${p.up ? p.errors : "–"}</td></tr>`).join("");
      const gwRate = rater(last?.gws);
      $("#gateways tbody").innerHTML = gws.map((g) => {
        if (!g.up) return `<tr data-target="${esc(g.target)}"><td>${esc(g.target)}</td><td>${down(g)}</td><td colspan="7">–</td></tr>`;
        const reasons = Object.entries(g.dropped).filter(([, n]) => n > 0).map(([r, n]) => `${esc(r)} ${n}`).join(", ");
        const warn = g.warnings.length > 0;
        return `<tr data-target="${esc(g.target)}" class="${warn ? "gateway-warn" : ""}"><td>${esc(g.target)}</td><td>up</td>
          <td>${g.spool_records}</td><td>${bytes(g.spool_bytes)}</td>
          <td class="${g.oldest_age_s > g.max_age_s ? "raised" : ""}">${g.spool_records > 0 ? seconds(g.oldest_age_s) : "–"}</td>
          <td>${gwRate(g, "forwarded")}</td><td class="${g.dropped_total > 0 ? "raised" : ""}">${g.dropped_total}${reasons ? ` (${reasons})` : ""}</td>
          <td>${g.forward_failures}</td>
          <td class="warnings">${g.warnings.map((w) => `<span class="badge warning">⚠ ${esc(w)}</span>`).join(" ")}</td></tr>`;
      }).join("") || `<tr><td colspan="9" class="muted">No gateway metrics configured (STREAMFORGE_CONSOLE_GATEWAY_TARGETS).</td></tr>`;
      last = { t: now, procs, gws };
    } else {
      $("#processes tbody").innerHTML = `<tr><td colspan="7" class="muted">Process figures are for admins (they are not split by tenant).</td></tr>`;
      $("#gateways tbody").innerHTML = `<tr><td colspan="9" class="muted">Gateway figures are for admins (they are not split by tenant).</td></tr>`;
    }
    const dead = await api("/console/api/dead-letters?limit=20");
    $("#dead tbody").innerHTML = dead.map((d) => `<tr><td>${new Date(d.received_at).toLocaleString()}</td><td>${esc(d.source)}</td>
      <td>${esc(d.step)}</td><td>${esc(d.reason)}</td><td><code>${esc(d.payload)}</code></td></tr>`).join("");
  };
  $("#flows").onclick = async (e) => {
    const b = e.target.closest("button[data-act]");
    if (!b) return;
    try { await api(`/flows/${encodeURIComponent(b.dataset.flow)}/${b.dataset.act}`, { method: "POST" }); refresh(); }
    catch (err) { notice(`Failed: ${err.message}`); }
  };
  await refresh();
  timer = setInterval(() => refresh().catch((err) => notice(err.message)), 2000);
  return {};
}

// ---- routing --------------------------------------------------------------------------
async function route() {
  delete document.body.dataset.ready;
  if (!sessionStorage.getItem(KEY) || !state.me) return showLogin();
  const [, page, arg] = location.hash.split("/");
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === page);
  notice("");
  state.view = null;
  try {
    const views = { plant: plantView, registry: registryView, alarms: alarmsView, pipeline: pipelineView };
    state.view = page === "device" ? await deviceView(decodeURIComponent(arg || "")) : await (views[page] || plantView)();
    document.body.dataset.ready = page || "plant"; // the page has drawn (tests wait for it)
  } catch (err) {
    if (err.message !== "401") notice(`Could not load: ${err.message}`);
  }
}

window.addEventListener("hashchange", route);
$("#logout").onclick = () => logout();
if (sessionStorage.getItem(KEY)) start().catch(() => showLogin("Log in again."));
else showLogin();
