// A station's details: the last NG's whole view with its boxes beside a full-resolution crop
// around each located defect (blue film: the frame as a strip with each defect's line and
// metres), the recent verdicts and the station's Pareto. Opened by a click or touch on a tile.
import { paretoChart } from "./charts.js";
import { $, describe, esc, ms, num, pct } from "./util.js";

const lineText = (line, st) => {
  const m = st.mm_per_line ? ` · ${((line * st.mm_per_line) / 1000).toFixed(3)} m` : "";
  return `line ${num(line)}${m}`;
};

export class Detail {
  constructor(feed) {
    this.feed = feed;
    this.dialog = $("detail");
    this.name = null;
    this.ngKey = null;
    this.loading = false;
    this.dialog.addEventListener("click", (e) => { if (e.target === this.dialog) this.dialog.close(); });
    this.dialog.addEventListener("close", () => { this.name = null; this.ngKey = null; });
  }

  open(name) {
    this.name = name;
    this.ngKey = null;
    this.dialog.innerHTML = `<div class="d-head"><div><h2 id="detail-title">${esc(name)}</h2><div class="facts"></div></div>
      <button class="btn" type="button" data-close>Close ✕</button></div>
      <div class="d-body"><section class="d-ng"><p class="empty">no NG this shift</p></section>
      <section class="d-side"><h3>Last verdicts</h3><table class="recent"><thead><tr><th>seq</th><th>cell</th><th>verdict</th>
      <th>reason · label</th><th>score</th><th>ms</th></tr></thead><tbody></tbody></table></section>
      <section class="d-side"><h3>NG Pareto this shift</h3><div class="chart pareto" data-station-pareto></div></section></div>`;
    this.dialog.querySelector("[data-close]").addEventListener("click", () => this.dialog.close());
    if (!this.dialog.open) this.dialog.showModal();
    this.render(this.feed.snapshot);
  }

  render(snap) {
    if (!this.name || !snap) return;
    const st = snap.stations[this.name];
    if (!st) return;
    const q = (s) => this.dialog.querySelector(s);
    const lat = st.latency;
    const m = st.model;
    q(".facts").innerHTML = `${esc(st.state.text)} · recipe <b>${esc(st.recipe || "none")}</b> · model <code>${m ? esc(`${m.name} ${m.version}`) : "–"}</code>` +
      ` · yield this shift <b>${pct(st.shift ? st.shift.yield : null)}</b> · latency p50 <b>${ms(lat ? lat.p50 : null)}</b> / p99 <b>${ms(lat ? lat.p99 : null)}</b> ms (last ${snap.latency.window_s} s)`;
    q("tbody").innerHTML = st.recent.map((r) => `<tr class="${r.verdict === "NG" ? "ng" : "ok"}" data-seq="${r.seq}"><td>${r.seq}</td>` +
      `<td>${r.cell_id}</td><td class="v">${r.verdict}</td><td>${esc([r.reason, r.label].filter(Boolean).join(" · "))}</td>` +
      `<td>${r.score ?? "–"}</td><td>${Number(r.latency_ms).toFixed(1)}</td></tr>`).join("");
    paretoChart(q("[data-station-pareto]"), st);
    const ng = st.last_ng;
    const key = ng ? `${ng.run_id}/${ng.seq}` : null;
    if (key !== this.ngKey && !this.loading) { this.ngKey = key; if (ng) this.loadNg(st, ng); }
  }

  async loadNg(st, ng) {
    const box = this.dialog.querySelector(".d-ng");
    const name = st.name;
    this.loading = true;
    let about;
    try { about = await describe(name, ng); } finally { this.loading = false; }
    if (this.name !== name || this.ngKey !== `${ng.run_id}/${ng.seq}`) return;
    const when = new Date(ng.t_frame_ns / 1e6).toLocaleTimeString("en-GB");
    const has = Boolean(about.picture);
    const view = has && about.view ? ` · <b>view ${esc(about.view.name)} of ${about.view.of} failed</b>` : "";
    const why = [ng.reason, ng.label].filter(Boolean).join(" · ");
    const score = ng.score === null ? "" : ` ${ng.score}`;
    const strip = has && Boolean(about.picture.strip);
    box.className = `d-ng${strip ? " strip" : ""}`;
    box.dataset.seq = ng.seq;
    let html = `<div class="whole"><h3>Last NG · whole view</h3>`;
    html += has ? `<img alt="${esc(name)} cell ${ng.cell_id}, whole view" src="${about.urls.picture}">` : `<p class="empty">no picture: ${esc(about.why)}</p>`;
    if (has && about.view) html += this.views(about.view);
    if (strip) html += this.axis(st, about);
    html += `<p class="cap">cell ${ng.cell_id} · ${esc(when)} · ${esc(why)}${esc(score)}${view}</p></div>`;
    html += `<div class="crops-box"><h3>${strip ? "Each defect, zoomed" : "At the defect, full resolution"}</h3><div class="crops">`;
    const crops = has ? about.crops : [];
    if (ng.reason !== "defect") html += `<p class="empty">a fail-safe NG (${esc(ng.reason)}): the cell was not fully inspected, so nothing was located</p>`;
    else if (!has) html += `<p class="empty">nothing to zoom into</p>`;
    else if (!crops.length) html += `<p class="empty">this model judges the whole view and does not locate a defect: the whole view is at full resolution</p>`;
    crops.forEach((c, i) => {
      const d = c.defect;
      const where = strip ? `${lineText(d.y + Math.floor(d.h / 2), st)} · across ${num(d.x + Math.floor(d.w / 2))} px`
        : `x ${num(d.x)} y ${num(d.y)}`;
      const src = c.source === "frame" ? `full resolution, ${c.zoom}× enlarged` : "from the reduced overview (no full-resolution crop)";
      html += `<figure class="crop" data-crop="${i + 1}"><img alt="defect ${i + 1} of ${esc(name)}" src="${about.urls.crops[i]}">` +
        `<figcaption><b>#${i + 1} ${esc(d.kind)} ${Number(d.score).toFixed(2)}</b><br>${where} · ${d.w}×${d.h} px<br><span class="dim">${src}${c.mask ? "; yellow: the defect's mask" : ""}</span></figcaption></figure>`;
    });
    box.innerHTML = html + "</div></div>";
    if (strip) {
      // the strip as wide as fits 28 % of the screen's height: its crops fit beside it
      const img = box.querySelector(".whole img");
      const fit = () => {
        const wide = (img.naturalWidth / Math.max(img.naturalHeight, 1)) * 0.28 * innerHeight;
        box.querySelector(".whole").style.maxWidth = `${Math.round(wide)}px`;
      };
      if (img.complete) fit(); else img.addEventListener("load", fit, { once: true });
    }
  }

  /** Which of the cell's views failed: one numbered square each, the failed one marked. */
  views(view) {
    let html = `<div class="views" role="img" aria-label="view ${esc(view.name)} of ${view.of} failed">`;
    for (let k = 1; k <= view.of; k += 1) {
      const bad = String(k) === String(view.name);
      html += `<span class="${bad ? "bad" : ""}">${bad ? "✕ " : ""}${k}</span>`;
    }
    return `${html}</div>`;
  }

  /** The strip's scale: ticks along the film and a marker at each defect's line (HTML, so
   *  the labels keep their shape at any width). */
  axis(st, about) {
    const p = about.picture;
    const lines = st.lines || Math.round(p.source[1] / p.scale);
    const at = (line) => `${Math.min(Math.max((100 * line) / lines, 0), 100).toFixed(2)}%`;
    let html = '<div class="strip-axis" aria-hidden="true">';
    for (let k = 0; k <= 6; k += 1) {
      const line = (k * lines) / 6;
      const label = st.mm_per_line ? `${((line * st.mm_per_line) / 1000).toFixed(2)} m` : num(Math.round(line));
      html += `<div class="tick${k === 0 ? " first" : k === 6 ? " last" : ""}" style="left:${at(line)}"><span>${label}</span></div>`;
    }
    about.defects.forEach((d, i) => {
      const line = d.y + Math.floor(d.h / 2);
      const side = line > lines * 0.8 ? " right" : line < lines * 0.2 ? " left" : "";
      html += `<div class="mark${side}${i % 2 ? " low" : ""}" style="left:${at(line)}" data-line="${line}"><span>#${i + 1} ${esc(lineText(line, st))}</span></div>`;
    });
    const unit = st.mm_per_line ? `at ${st.mm_per_line} mm a line` : "in lines (set line_scan.mm_per_line for metres)";
    return `${html}</div><p class="cap dim">the film runs left to right: ${num(lines)} lines, ${esc(unit)}</p>`;
  }
}
