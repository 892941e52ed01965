// One tile per station: the last verdict (shape, word and colour), the shift's yield, the
// last NG's picture and the station's state. A click or touch opens its details.
import { $, ago, describe, el, esc, glyph, num, pct, setAttr, setText } from "./util.js";

const TICKS = 12;
const IMAGE_EVERY_MS = 1000;  // a tile's NG picture changes at most once a second

export class Tiles {
  constructor(onOpen) {
    this.root = $("tiles");
    this.onOpen = onOpen;
    this.tiles = new Map();
  }

  tile(name) {
    let t = this.tiles.get(name);
    if (t) return t;
    const node = el(`<article class="tile" data-station="${esc(name)}" data-state="waiting" tabindex="0" role="button"
        aria-label="${esc(name)}: open details">
      <div class="t-head"><h3>${esc(name)}</h3><span class="t-state"><i aria-hidden="true"></i><b>waiting</b></span></div>
      <div class="t-body">
        <div class="t-verdict" data-verdict="-"><span class="g"></span><b class="word">–</b>
          <div class="t-why"></div><div class="t-cell"></div></div>
        <div class="t-yield" data-low="0"><span class="lbl">Yield this shift</span><b class="big">–</b>
          <span class="counts"></span><span class="t-window"></span></div>
        <div class="ticker" aria-label="last ${TICKS} verdicts, newest on the right"></div>
        <div class="t-ng"><span class="lbl">Last NG</span><div class="frame"><img alt="" hidden><span class="none">none this shift</span></div>
          <div class="t-ng-cap"></div></div>
      </div></article>`);
    const open = () => this.onOpen(name);
    node.addEventListener("click", open);
    node.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); open(); } });
    this.root.appendChild(node);
    const q = (s) => node.querySelector(s);
    const ticker = q(".ticker");
    for (let i = 0; i < TICKS; i += 1) ticker.appendChild(document.createElement("span"));
    const img = q(".t-ng img");
    t = { node, verdict: q(".t-verdict"), g: q(".g"), word: q(".word"), why: q(".t-why"), cell: q(".t-cell"),
      ticks: [...ticker.children], state: q(".t-state b"), yieldBox: q(".t-yield"), big: q(".big"),
      counts: q(".counts"), window: q(".t-window"), img, none: q(".t-ng .none"), cap: q(".t-ng-cap"),
      glyphFor: null, imgKey: null, imgAt: 0, asking: false };
    img.addEventListener("load", () => { img.hidden = false; t.none.hidden = true; });
    img.addEventListener("error", () => { img.hidden = true; t.none.hidden = false; setText(t.none, "picture not loaded"); });
    this.tiles.set(name, t);
    return t;
  }

  render(snap, feedAge) {
    for (const st of Object.values(snap.stations)) this.renderOne(this.tile(st.name), st, snap, feedAge);
  }

  renderOne(t, st, snap, feedAge) {
    setAttr(t.node, "data-state", st.state.code);
    setText(t.state, st.state.text);
    const last = st.last;
    const v = last ? last.verdict : "-";
    setAttr(t.verdict, "data-verdict", v);
    if (t.glyphFor !== v) { t.g.innerHTML = glyph(v); t.glyphFor = v; }
    setText(t.word, last ? v : "–");
    setText(t.why, last ? (v === "NG" ? [last.reason, last.label].filter(Boolean).join(" · ") : last.label || "") : "");
    setText(t.cell, last ? `cell ${last.cell_id} · ${ago(st.age_s + feedAge)} ago` : "no verdict yet");
    const recent = st.recent;
    for (let i = 0; i < TICKS; i += 1) {
      const r = recent[TICKS - 1 - i];
      const cls = r ? (r.verdict === "OK" ? "ok" : "ng") : "none";
      if (t.ticks[i].className !== cls) {
        t.ticks[i].className = cls;
        t.ticks[i].textContent = r ? (r.verdict === "OK" ? "✓" : "✕") : "";
      }
    }
    const shift = st.shift;
    const y = shift ? shift.yield : null;
    const w = st.window;
    const low = (y !== null && y < snap.min_yield) || (w.yield !== null && w.n >= 50 && w.yield < snap.min_yield);
    setAttr(t.yieldBox, "data-low", low ? "1" : "0");
    setText(t.big, pct(y));
    if (shift) t.counts.innerHTML = `<span>${num(shift.ok)} OK</span> · <span class="n-ng">${num(shift.ng)} NG</span>`;
    setText(t.window, w.n ? `last ${num(w.n)} cells: ${pct(w.yield)}` : "");
    this.renderNg(t, st, snap, feedAge);
  }

  renderNg(t, st, snap, feedAge) {
    const ng = st.last_ng;
    if (!ng) { t.img.hidden = true; t.none.hidden = false; setText(t.none, "none this shift"); setText(t.cap, ""); return; }
    const seconds = (snap.server_ms - ng.t_frame_ns / 1e6) / 1000 + feedAge;
    const when = new Date(ng.t_frame_ns / 1e6).toLocaleTimeString("en-GB");
    const why = [ng.reason, ng.label].filter(Boolean).join(" · ");
    t.cap.innerHTML = `${esc(when)} · ${esc(why)} · cell ${ng.cell_id} <span class="ago">(${esc(ago(seconds))} ago)</span>`;
    const key = `${ng.run_id}/${ng.seq}`;
    const now = performance.now();
    if (key === t.imgKey || t.asking || now - t.imgAt < IMAGE_EVERY_MS) return;
    t.imgKey = key; t.imgAt = now;
    this.picture(t, st.name, ng, key);
  }

  /** The crop around the first located defect if there is one, else the whole view. One
   *  question at a time per tile: the browser has few connections to the HMI. */
  async picture(t, name, ng, key) {
    t.asking = true;
    let about;
    try { about = await describe(name, ng); } finally { t.asking = false; }
    if (t.imgKey !== key) return;
    if (!about.picture) {
      t.img.hidden = true; t.none.hidden = false;
      setText(t.none, `no picture: ${about.why}`);
      return;
    }
    const crop = about.urls.crops[0];
    t.img.alt = `${name}: last NG, cell ${ng.cell_id}, ${crop ? "crop around the defect" : "whole view"}`;
    t.img.dataset.seq = ng.seq;
    t.img.dataset.part = crop ? "crop" : "whole";
    t.img.src = crop || about.urls.picture;
  }
}
