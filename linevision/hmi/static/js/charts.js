// The shift's figures as hand-written SVG (no chart library): yield per hour per station,
// the NG Pareto by reason and by label, latency p50 / p99 / max per second against the budget.
// Each chart says the window it covers; each bar carries its numbers as data attributes.
import { esc, ms, num, pct } from "./util.js";

// Chart sizes come from a ResizeObserver, so drawing never forces a layout of the page.
const sizes = new WeakMap();
const observer = new ResizeObserver((entries) => {
  for (const e of entries) sizes.set(e.target, [Math.floor(e.contentRect.width), Math.floor(e.contentRect.height)]);
});
const size = (node) => {
  let s = sizes.get(node);
  if (!s) { observer.observe(node); s = [node.clientWidth, node.clientHeight]; sizes.set(node, s); }
  return [Math.max(s[0], 200), Math.max(s[1], 120)];
};
const svg = (w, h, body, label) =>
  `<svg viewBox="0 0 ${w} ${h}" width="${w}" height="${h}" role="img" aria-label="${esc(label)}">${body}</svg>`;

/** Yield per hour of the shift: one row of bars per station, the yield written on each bar. */
export function yieldChart(node, snap, names) {
  const [w, h] = size(node);
  const rows = names.map((n) => snap.stations[n]).filter(Boolean);
  const hours = Math.max(1, ...rows.map((st) => (st.shift ? st.shift.hourly.length : 0)));
  if (!rows.some((st) => st.shift && st.shift.ok + st.shift.ng > 0)) {
    node.innerHTML = '<p class="empty">no verdicts this shift yet</p>';
    return;
  }
  let lowest = 1;
  for (const st of rows) for (const b of st.shift ? st.shift.hourly : []) if (b.yield !== null) lowest = Math.min(lowest, b.yield);
  const floor = Math.max(0, Math.min(0.9, Math.floor((Math.min(lowest, snap.min_yield) - 0.02) * 20) / 20));
  const left = 150, bottom = 20, rowH = (h - bottom) / rows.length, colW = (w - left - 4) / hours;
  const yOf = (y, top) => top + rowH - 4 - (rowH - 22) * Math.max(0, (y - floor) / (1 - floor));
  let body = "";
  rows.forEach((st, i) => {
    const top = i * rowH;
    const total = st.shift ? st.shift.yield : null;
    body += `<text class="name" x="4" y="${top + rowH / 2}">${esc(st.name)}</text>`;
    body += `<text x="4" y="${top + rowH / 2 + 17}">shift ${esc(pct(total))}</text>`;
    body += `<line class="axis" x1="${left}" x2="${w - 4}" y1="${top + rowH - 4}" y2="${top + rowH - 4}"/>`;
    const lim = yOf(snap.min_yield, top);
    body += `<line class="limit" x1="${left}" x2="${w - 4}" y1="${lim}" y2="${lim}"/>`;
    (st.shift ? st.shift.hourly : []).forEach((b, k) => {
      if (b.yield === null) return;
      const x = left + k * colW + 3, y = yOf(b.yield, top), bw = Math.max(colW - 6, 2);
      const low = b.yield < snap.min_yield;
      body += `<rect class="${low ? "bar-low" : "bar-ok"}" x="${x}" y="${y}" width="${bw}" height="${top + rowH - 4 - y}"` +
        ` data-station="${esc(st.name)}" data-hour="${esc(b.from)}" data-ok="${b.ok}" data-ng="${b.ng}" data-yield="${b.yield}">` +
        `<title>${esc(st.name)} ${esc(b.from)}: ${pct(b.yield, 2)} (${num(b.ok)} OK, ${num(b.ng)} NG)</title></rect>`;
      body += `<text class="v${low ? " low" : ""}" x="${x + bw / 2}" y="${Math.max(y - 3, top + 13)}" text-anchor="middle">${(100 * b.yield).toFixed(1)}${low ? " ▼" : ""}</text>`;
    });
  });
  const first = rows.find((st) => st.shift && st.shift.hourly.length);
  const labels = first ? first.shift.hourly.map((b) => b.from) : [];
  const every = Math.ceil(48 / colW);  // an hour's label needs about 48 px
  labels.forEach((lab, k) => {
    if (k % every === 0) body += `<text x="${left + k * colW + colW / 2}" y="${h - 4}" text-anchor="middle">${esc(lab)}</text>`;
  });
  node.dataset.floor = floor;
  node.innerHTML = svg(w, h, body, "yield per hour of the shift, per station");
}

function paretoBars(bars, w, h, kind) {
  if (!bars.length) return `<p class="empty">no NG</p>`;
  const rowH = Math.min(30, (h - 4) / bars.length), left = Math.min(150, w * 0.34);
  const max = Math.max(...bars.map((b) => b.n));
  let body = "";
  const numbers = 100;  // "1,234 · 83 %", left of the bar: a bar never pushes text out
  bars.forEach((b, i) => {
    const y = i * rowH + 2, bw = ((w - left - numbers - 4) * b.n) / max;
    const room = Math.max(4, Math.floor((left - 8) / 8.5));
    const key = b.key.length > room ? `${b.key.slice(0, room - 1)}…` : b.key;
    body += `<text x="${left - 6}" y="${y + rowH * 0.7}" text-anchor="end" class="v">${esc(key)}</text>`;
    body += `<text x="${left + numbers - 6}" y="${y + rowH * 0.7}" text-anchor="end" class="v">${num(b.n)}<tspan class="cum"> · ${(100 * b.cum).toFixed(0)} %</tspan></text>`;
    body += `<rect class="bar-ng" x="${left + numbers}" y="${y + 2}" width="${Math.max(bw, 2)}" height="${rowH - 5}" data-kind="${kind}"` +
      ` data-key="${esc(b.key)}" data-n="${b.n}" data-cum="${b.cum}"><title>${esc(b.key)}: ${b.n} NG, cumulative ${pct(b.cum)}</title></rect>`;
  });
  return svg(w, Math.max(h, bars.length * rowH + 4), body, `NG by ${kind}`);
}

/** The Pareto of one station's NG this shift: by reason, and by label (class or defect kind). */
export function paretoChart(node, st) {
  const shift = st && st.shift;
  if (!shift || shift.ng === 0) {
    node.innerHTML = `<p class="empty">${st ? esc(st.name) + ": no NG this shift" : "no station yet"}</p>`;
    return;
  }
  const [w, h] = size(node);
  const half = Math.floor((w - 10) / 2);
  node.innerHTML =
    `<div data-pareto="reason"><h3>by reason (${num(shift.ng)} NG)</h3>${paretoBars(shift.pareto.reason, half, h - 22, "reason")}</div>` +
    `<div data-pareto="label"><h3>by label (defect NG)</h3>${paretoBars(shift.pareto.label, half, h - 22, "label")}</div>`;
}

/** p50 / p99 / max per second against the budget, over the latency window. */
export function latencyChart(node, lat, budget) {
  const [w, h] = size(node);
  const pts = lat.chart;
  const span = lat.window_s;
  const top = Math.max(budget * 1.5, ...pts.map((p) => p.max));
  const left = 42, right = 8, bottom = 20;
  const x = (t) => left + (w - left - right) * (1 + (t - 0.5) / span);
  const y = (v) => h - bottom - (h - bottom - 6) * Math.min(v / top, 1);
  let body = "";
  for (const v of [0, budget, top]) {
    body += `<text x="${left - 4}" y="${y(v) + 4}" text-anchor="end">${v.toFixed(0)}</text>`;
  }
  body += `<text x="${left + 4}" y="${y(top) + 10}">ms</text>`;
  for (let t = 0; t >= -span; t -= 30) body += `<text x="${x(t)}" y="${h - 4}" text-anchor="middle">${t} s</text>`;
  body += `<line class="axis" x1="${left}" x2="${w - right}" y1="${h - bottom}" y2="${h - bottom}"/>`;
  body += `<line class="budget" x1="${left}" x2="${w - right}" y1="${y(budget)}" y2="${y(budget)}"/>`;
  body += `<text x="${w - right}" y="${y(budget) - 4}" text-anchor="end" class="v">budget ${budget} ms</text>`;
  for (const key of ["p50", "p99", "max"]) {
    const d = pts.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p[key]).toFixed(1)}`).join("");
    if (d) body += `<path class="${key === "max" ? "pmax" : key}" d="${d}"/>`;
  }
  node.innerHTML = svg(w, h, body, `latency per second over the last ${span} s`);
}

export function latencyKpis(node, lat, budget) {
  const item = (name, v) => `<span class="${v !== null && v > budget ? "over" : ""}" data-kpi="${name}">${name} <b>${ms(v)}</b> ms</span>`;
  const legend = `<span class="legend"><span><svg viewBox="0 0 26 8"><path class="p50" d="M0 4h26" stroke="var(--accent)" stroke-width="2"/></svg>p50</span>` +
    `<span><svg viewBox="0 0 26 8"><path d="M0 4h26" stroke="var(--warn)" stroke-width="2.5" stroke-dasharray="7 3"/></svg>p99</span>` +
    `<span><svg viewBox="0 0 26 8"><path d="M0 4h26" stroke="#c78cff" stroke-width="1.5" stroke-dasharray="2 3"/></svg>max</span></span>`;
  node.innerHTML = item("p50", lat.p50) + item("p99", lat.p99) + item("max", lat.max) + legend;
}
