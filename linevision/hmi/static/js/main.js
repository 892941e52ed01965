// The operator page: wires the feed to the tiles, alarms, charts and dialogs. One render per
// animation frame at most, whatever the rate of snapshots; charts at most once a second.
import { paretoChart, latencyChart, latencyKpis, yieldChart } from "./charts.js";
import { Alarms } from "./alarms.js";
import { Detail } from "./detail.js";
import { Feed } from "./feed.js";
import { System } from "./system.js";
import { Tiles } from "./tiles.js";
import { $, ago, esc, setAttr, setText } from "./util.js";

const CHARTS_EVERY_MS = 1000;
const stats = { events: 0, renders: 0, chartRenders: 0, maxRenderMs: 0, maxFrameGapMs: 0, lastVersion: 0, partMs: {}, renderMsTotal: 0 };
window.hmiStats = stats;

let scheduled = false;
let chartsAt = -Infinity;
let paretoPick = null;   // a station the operator chose, else the one with most NG
const feed = new Feed(() => {
  stats.events = feed.stats.events;
  if (!scheduled) { scheduled = true; requestAnimationFrame(render); }
});
const detail = new Detail(feed);
const tiles = new Tiles((name) => detail.open(name));
const alarms = new Alarms(feed);
const system = new System(feed);

function names(snap) {
  return Object.keys(snap.stations);
}

function shiftLabel(snap) {
  return snap.shift_start ? snap.shift_start.slice(11, 16) : "–";
}

function renderCharts(snap) {
  const shift = shiftLabel(snap);
  yieldChart($("yield-chart"), snap, names(snap));
  const floor = Number($("yield-chart").dataset.floor || 0.9);
  setText($("yield-window"), `shift from ${shift}; bars from ${(100 * floor).toFixed(0)} %, dashed: alarm at ${(100 * snap.min_yield).toFixed(0)} %`);
  const stations = Object.values(snap.stations);
  const busiest = stations.reduce((a, b) => ((b.shift ? b.shift.ng : 0) > (a && a.shift ? a.shift.ng : 0) ? b : a), stations[0]);
  const chosen = (paretoPick && snap.stations[paretoPick]) || busiest;
  setText($("pareto-window"), chosen ? `${chosen.name}, shift from ${shift}` : "");
  const pick = $("pareto-pick");
  const buttons = ["auto", ...names(snap)];
  if (pick.children.length !== buttons.length) {
    pick.innerHTML = buttons.map((n) => `<button class="btn" type="button" data-pick="${esc(n)}">${esc(n)}</button>`).join("");
  }
  for (const b of pick.children) setAttr(b, "aria-pressed", String((b.dataset.pick === "auto" && !paretoPick) || b.dataset.pick === paretoPick));
  paretoChart($("pareto-chart"), chosen);
  const lat = snap.latency;
  const covered = lat.covered_s < lat.window_s ? ` (only the last ${lat.covered_s} s kept)` : "";
  setText($("latency-window"), `frame → verdict, last ${lat.window_s} s, ${lat.n.toLocaleString("en-GB")} verdicts${covered}; chart per second`);
  latencyKpis($("latency-kpis"), lat, snap.budget_ms);
  latencyChart($("latency-chart"), lat, snap.budget_ms);
  stats.chartRenders += 1;
}

/** The longest each part of a render took (the load test reads them). */
function timed(part, fn) {
  const t = performance.now();
  fn();
  stats.partMs[part] = Math.max(stats.partMs[part] || 0, performance.now() - t);
}

function render() {
  scheduled = false;
  const snap = feed.snapshot;
  if (!snap) return;
  const t0 = performance.now();
  setText($("recipe"), snap.recipes.length ? snap.recipes.join(", ") : "none");
  setText($("shift"), shiftLabel(snap));
  timed("tiles", () => tiles.render(snap, feed.age() || 0));
  timed("alarms", () => alarms.render(snap));
  timed("detail", () => detail.render(snap));
  timed("system", () => system.render(snap));
  if (t0 - chartsAt >= CHARTS_EVERY_MS) { chartsAt = t0; timed("charts", () => renderCharts(snap)); }
  stats.renders += 1;
  stats.lastVersion = snap.version;
  const took = performance.now() - t0;
  stats.maxRenderMs = Math.max(stats.maxRenderMs, took);
  stats.renderMsTotal += took;
}

/** Once a second: the clock, the connection's state and age, stale or not. */
function heartbeat() {
  setText($("clock"), new Date().toLocaleTimeString("en-GB"));
  const s = feed.status();
  const age = feed.age();
  const conn = $("conn");
  setAttr(conn, "class", `conn ${s.state === "live" ? "live" : s.state === "reconnecting" ? "down" : s.state}`);
  setText($("conn-state"), s.state);
  setText($("conn-age"), age === null ? "" : `· updated ${ago(age)} ago`);
  conn.title = s.why;
  const stale = s.state !== "live";
  document.body.classList.toggle("stale", stale && feed.snapshot !== null);
  document.body.classList.toggle("connecting", feed.snapshot === null);
  const when = feed.snapshot ? new Date(feed.snapshot.server_ms).toLocaleTimeString("en-GB") : "";
  setText($("stale-banner"), stale ? `STALE: ${s.why}. Figures as of ${when}` : "");
}

$("pareto-pick").addEventListener("click", (e) => {
  const b = e.target.closest("[data-pick]");
  if (!b) return;
  paretoPick = b.dataset.pick === "auto" ? null : b.dataset.pick;
  chartsAt = -Infinity;
  if (!scheduled) { scheduled = true; requestAnimationFrame(render); }
});

let lastFrame = performance.now();
function frameWatch(t) {
  stats.maxFrameGapMs = Math.max(stats.maxFrameGapMs, t - lastFrame);
  lastFrame = t;
  requestAnimationFrame(frameWatch);
}
requestAnimationFrame(frameWatch);
setInterval(heartbeat, 1000);
heartbeat();
feed.connect();
