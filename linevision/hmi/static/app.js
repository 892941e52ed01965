"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  const pct = (y) => (y === null || y === undefined ? "-" : (100 * y).toFixed(1) + " %");
  const stats = { events: 0, renders: 0, maxRenderMs: 0, maxFrameGapMs: 0, lastVersion: 0 };
  window.hmiStats = stats;
  let latest = null;
  let scheduled = false;
  const imgSeq = {};

  function connect() {
    const src = new EventSource("events");
    src.onopen = () => { $("conn").className = "dot on"; $("conn-text").textContent = "live"; };
    src.onerror = () => { $("conn").className = "dot off"; $("conn-text").textContent = "reconnecting"; };
    src.onmessage = (e) => {
      stats.events += 1;
      latest = JSON.parse(e.data);
      if (!scheduled) { scheduled = true; requestAnimationFrame(render); }
    };
  }

  function stationCard(st) {
    let card = document.querySelector(`.station[data-station="${st.name}"]`);
    if (!card) {
      const empty = document.querySelector("#stations .empty");
      if (empty) empty.remove();
      card = document.createElement("article");
      card.className = "station";
      card.dataset.station = st.name;
      card.innerHTML = `<div class="station-head"><h3>${esc(st.name)}</h3><div class="tags"></div></div>
        <div class="counters"></div><div class="reasons"></div>
        <div class="station-body"><table class="verdicts"><thead><tr><th>seq</th><th>cell</th>
        <th>verdict</th><th>reason / label</th><th>score</th><th>ms</th><th>recipe</th></tr></thead>
        <tbody></tbody></table><div class="ngbox"><h4>Latest NG</h4>
        <img class="ng-image" alt="latest NG image" hidden><div class="cap">no NG yet</div></div></div>`;
      $("stations").appendChild(card);
    }
    return card;
  }

  function renderStation(st) {
    const card = stationCard(st);
    const m = st.model;
    card.querySelector(".tags").innerHTML =
      `recipe <code>${esc(st.recipe || "-")}</code> · model <code>${m ? esc(m.name + " " + m.version) : "-"}</code>`;
    const c = [["Shift OK", st.shift.ok, "ok"], ["Shift NG", st.shift.ng, "ng"], ["Shift yield", pct(st.shift.yield), ""],
      ["Run OK", st.run.ok, "ok"], ["Run NG", st.run.ng, "ng"], ["Run yield", pct(st.run.yield), ""]];
    card.querySelector(".counters").innerHTML = c.map(([l, v, k]) =>
      `<div class="counter ${k}"><label>${l}</label><b>${esc(v)}</b></div>`).join("");
    card.querySelector(".reasons").innerHTML = Object.entries(st.reasons).map(([r, n]) =>
      `<span class="chip">${esc(r)} ${n}</span>`).join("");
    card.querySelector("tbody").innerHTML = st.recent.map((r) => {
      const cls = r.verdict === "NG" ? "ng" : "ok";
      const why = [r.reason, r.label].filter(Boolean).join(" / ");
      return `<tr class="${cls}" data-seq="${r.seq}"><td>${r.seq}</td><td>${r.cell_id}</td>
        <td class="v">${r.verdict}</td><td>${esc(why)}</td><td>${r.score ?? "-"}</td>
        <td>${Number(r.latency_ms).toFixed(1)}</td><td>${esc(r.recipe || "-")}</td></tr>`;
    }).join("");
    const ng = st.last_ng;
    if (ng && imgSeq[st.name] !== ng.seq) {
      imgSeq[st.name] = ng.seq;
      const img = card.querySelector(".ng-image");
      img.onload = () => { img.hidden = false; };
      img.onerror = () => { img.hidden = true; };
      img.dataset.seq = ng.seq;
      img.src = `img/${st.name}/${ng.run_id}/${ng.seq}.jpg?t=${ng.t_frame_ns}`;
      const when = new Date(ng.t_frame_ns / 1e6).toLocaleTimeString();
      card.querySelector(".cap").textContent =
        `cell ${ng.cell_id} · ${[ng.reason, ng.label].filter(Boolean).join(" / ")} · ${when}` +
        (ng.defects.length ? ` · ${ng.defects.length} defect(s)` : "");
    }
  }

  function renderChart(lat, budget) {
    const cv = $("chart");
    const ctx = cv.getContext("2d");
    const w = cv.width, h = cv.height, pad = 26;
    ctx.clearRect(0, 0, w, h);
    const pts = lat.chart;
    const top = Math.max(budget * 1.5, ...pts.map((p) => p.p99));
    const span = Math.min(120, Math.max(30, ...pts.map((p) => -p.t + 1)));
    const x = (t) => pad + (w - pad - 6) * (1 + t / span);
    const y = (v) => h - 16 - (h - 24) * Math.min(v / top, 1);
    ctx.fillStyle = "#8b98a5"; ctx.font = "11px sans-serif";
    ctx.fillText(top.toFixed(0), 2, 12); ctx.fillText("0", 2, h - 14);
    ctx.strokeStyle = "#e5534b"; ctx.setLineDash([5, 4]); ctx.beginPath();
    ctx.moveTo(pad, y(budget)); ctx.lineTo(w - 6, y(budget)); ctx.stroke(); ctx.setLineDash([]);
    for (const [key, colour] of [["p50", "#4da3ff"], ["p99", "#d29922"]]) {
      ctx.strokeStyle = colour; ctx.lineWidth = 2; ctx.beginPath();
      pts.filter((p) => p.t > -span).forEach((p, i) =>
        (i ? ctx.lineTo(x(p.t), y(p[key])) : ctx.moveTo(x(p.t), y(p[key]))));
      ctx.stroke();
    }
  }

  function renderSide(s) {
    const lat = s.latency;
    $("budget").textContent = s.budget_ms;
    for (const [id, v] of [["p50", lat.p50], ["p99", lat.p99], ["pmax", lat.max]]) {
      $(id).textContent = v === null ? "-" : v.toFixed(1);
      $(id).className = v !== null && v > s.budget_ms ? "over" : "";
    }
    renderChart(lat, s.budget_ms);
    $("alarms").innerHTML = s.alarms.length ? s.alarms.map((a) =>
      `<li class="${a.level}" data-code="${esc(a.code)}"><code>${esc(a.code)}</code>${esc(a.text)}</li>`).join("")
      : '<li class="none">none</li>';
    const h = s.health;
    const rows = [["daemon heartbeat", h.heartbeat_age_s === null ? '<span class="bad">none yet</span>'
      : `<span class="${h.heartbeat_age_s > 3.5 ? "bad" : "good"}">${h.heartbeat_age_s} s ago</span>`]];
    for (const [cam, c] of Object.entries(h.cameras)) {
      const good = c.state === "running";
      rows.push([`camera ${esc(cam)}`, `<span class="${good ? "good" : "bad"}">${esc(c.state)}</span>` +
        ` · ${c.frames ?? 0} frames · ${c.reconnects ?? 0} reconnects`]);
    }
    for (const st of Object.values(s.stations)) {
      const m = st.model;
      rows.push([`model ${esc(st.name)}`, m ? `${esc(m.name)} ${esc(m.version)} <code>${esc(m.sha256.slice(0, 12))}</code>` : "-"]);
      const q = (h.station_counters[st.name] || {}).queue;
      if (q !== undefined) rows.push([`queue ${esc(st.name)}`, String(q)]);
    }
    rows.push(["verdict bus", s.run_id ? `<span class="good">connected</span> · last seq ${s.last_seq}` : "waiting"]);
    for (const b of h.bridges || []) {
      const cls = { connected: "good", retrying: "warn", down: "bad" }[b.state] || "";
      const facts = [b.age_s === null ? "no health message" : `${b.age_s} s ago`];
      if (b.last_seq !== null) facts.push(`last seq ${b.last_seq}`);
      if (b.backlog) facts.push(`backlog ${b.backlog}`);
      if (b.lost) facts.push(`lost ${b.lost}`);
      if (b.retries) facts.push(`${b.retries} retries`);
      rows.push([`bridge ${esc(b.name || b.endpoint)}`, `<span class="${cls}" data-bridge="${esc(b.name || b.endpoint)}"` +
        ` data-state="${esc(b.state)}">${esc(b.state)}</span> · ${esc(facts.join(" · "))}`]);
    }
    $("health").innerHTML = rows.map(([k, v]) => `<tr><td>${k}</td><td>${v}</td></tr>`).join("");
  }

  function render() {
    scheduled = false;
    const s = latest;
    if (!s) return;
    const t0 = performance.now();
    $("run").textContent = s.run_id ? s.run_id.slice(0, 12) : "-";
    $("shift").textContent = s.shift_start ? s.shift_start.slice(11, 16) : "-";
    $("seen").textContent = s.verdicts_seen;
    Object.values(s.stations).forEach(renderStation);
    renderSide(s);
    stats.renders += 1;
    stats.lastVersion = s.version;
    stats.maxRenderMs = Math.max(stats.maxRenderMs, performance.now() - t0);
  }

  let lastFrame = performance.now();
  function frameWatch(t) {
    stats.maxFrameGapMs = Math.max(stats.maxFrameGapMs, t - lastFrame);
    lastFrame = t;
    requestAnimationFrame(frameWatch);
  }
  setInterval(() => { $("clock").textContent = new Date().toLocaleTimeString(); }, 1000);
  requestAnimationFrame(frameWatch);
  connect();
})();
