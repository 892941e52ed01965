// The operator review: NG and low-margin OK cells from the archive, one decision each.
"use strict";
const $ = (id) => document.getElementById(id);
let meta = null;

function text(tag, cls, content) {
  const el = document.createElement(tag);
  if (cls) el.className = cls;
  if (content !== undefined) el.textContent = content;
  return el;
}

async function getJson(url) {
  const r = await fetch(url, { credentials: "same-origin" });
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function facts(c) {
  const p = text("div", "facts");
  const when = new Date(c.t_frame_ns / 1e6).toLocaleString();
  const score = c.score === null ? "-" : c.score.toFixed(3);
  const conf = c.confidence === null ? "" : ` · confidence ${c.confidence.toFixed(3)}`;
  p.append(text("b", "", `${c.verdict} ${c.label || ""}`),
    ` · score ${score}${conf} · cell ${c.cell_id} · ${when}`);
  if (!c.raw) p.append(" · no frame kept");
  return p;
}

function reviewed(c) {
  const r = c.review;
  return r ? `${r.decision.replace("_", " ")} (${r.label}) by ${r.operator}` : "";
}

async function decide(c, decision, label, card) {
  const operator = $("operator").value.trim();
  if (!operator) { $("operator").focus(); $("status").textContent = "enter your name first"; return; }
  localStorage.setItem("linevision-operator", operator);
  const body = { run_id: c.run_id, seq: c.seq, decision, operator };
  if (label) body.label = label;
  const r = await fetch("api/review", {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  const reply = await r.json();
  if (!r.ok) { $("status").textContent = reply.error; $("status").className = "error"; return; }
  c.review = reply.review;
  card.classList.add("done");
  card.querySelector(".reviewed").textContent = reviewed(c);
  $("status").className = "";
  $("status").textContent = `recorded: cell ${c.cell_id} ${reply.review.decision} (${reply.review.label})`;
}

function card(c, rules) {
  const el = text("article", `cell ${c.verdict}` + (c.review ? " done" : ""));
  el.dataset.seq = c.seq;
  const img = document.createElement("img");
  img.src = c.image_url; img.alt = `cell ${c.cell_id}`; img.loading = "lazy";
  el.append(img, facts(c));
  const actions = text("div", "actions");
  const classes = document.createElement("select");
  classes.className = "label";
  for (const l of rules.defect_labels) {
    const o = text("option", "", l); o.value = l;
    if (l === c.label) o.selected = true;
    classes.append(o);
  }
  const btn = (cls, label, decision, withClass) => {
    const b = text("button", cls, label); b.type = "button"; b.dataset.decision = decision;
    b.onclick = () => decide(c, decision, withClass ? classes.value : null, el);
    return b;
  };
  if (c.verdict === "NG") {
    actions.append(btn("bad", "confirm NG", "confirm_ng", true), classes,
      btn("good", "false reject", "false_reject", false));
  } else {
    actions.append(btn("good", "confirm OK", "confirm_ok", false),
      btn("bad", "missed defect", "missed_defect", true), classes);
  }
  el.append(actions, text("div", "reviewed", reviewed(c)));
  return el;
}

function badge(cls, content) { return text("span", `badge ${cls}`, content); }

async function showState() {
  // the station's challenge and drift, from the daemon's heartbeat (the HMI's /api/state)
  try {
    const state = await getJson("api/state");
    const st = (state.lifecycle || {})[$("station").value] || {};
    const out = [];
    if (st.challenge !== undefined) {
      const ok = st.verified === true;
      const running = st.challenge_running ? " (running)" : "";
      out.push(badge(ok ? "good" : "bad",
        `${ok ? "vision verified" : "NOT verified"}: challenge ${st.challenge}${running}`));
    }
    if (st.drift !== undefined) {
      const level = st.drift;
      const cls = level === "ok" ? "good" : level === "critical" ? "bad" : "warn";
      const drifting = level === "warning" || level === "critical";
      const what = drifting ? ` (${st.drift_statistic}, PSI ${st.drift_psi})` : "";
      out.push(badge(cls, `drift: ${level.replace("_", " ")}${what}`));
    }
    $("lifecycle").replaceChildren(...out);
  } catch (e) {
    $("lifecycle").replaceChildren(badge("bad", `no state: ${e.message}`));
  }
}

async function load() {
  showState();
  const station = $("station").value;
  const data = await getJson(`api/review?station=${encodeURIComponent(station)}&limit=200`);
  const rules = meta.stations[station];
  const cells = data.cells.filter((c) => !$("open-only").checked || !c.review);
  $("cells").replaceChildren(...cells.map((c) => card(c, rules)));
  $("status").className = "";
  $("status").textContent = `${station}: ${cells.length} cells to review ` +
    `(NG, and OK below confidence ${data.ok_below})`;
}

async function start() {
  $("operator").value = localStorage.getItem("linevision-operator") || "";
  try {
    meta = await getJson("api/review");
    for (const name of Object.keys(meta.stations)) {
      const o = text("option", "", name); o.value = name; $("station").append(o);
    }
    $("station").onchange = load; $("open-only").onchange = load; $("refresh").onclick = load;
    await load();
    setInterval(showState, 5000);
  } catch (e) {
    $("status").textContent = `cannot load: ${e.message}`; $("status").className = "error";
  }
}
start();
