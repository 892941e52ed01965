// The system dialog: daemon heartbeat, cameras, models, queues, bridges, and the last
// acknowledgements (who and when).
import { $, esc, hms } from "./util.js";

export class System {
  constructor(feed) {
    this.feed = feed;
    this.dialog = $("system");
    $("system-open").addEventListener("click", () => this.open());
    this.dialog.addEventListener("click", (e) => { if (e.target === this.dialog) this.dialog.close(); });
  }

  open() {
    this.dialog.innerHTML = `<div class="d-head"><h2 id="system-title">System</h2><button class="btn" type="button" data-close>Close ✕</button></div>
      <div class="d-body"><section><h3>Health</h3><table class="health"><tbody></tbody></table></section>
      <section><h3>Acknowledged alarms</h3><table class="health acks"><tbody></tbody></table></section></div>`;
    this.dialog.querySelector("[data-close]").addEventListener("click", () => this.dialog.close());
    this.dialog.showModal();
    this.render(this.feed.snapshot);
  }

  render(s) {
    if (!this.dialog.open || !s) return;
    const h = s.health;
    const rows = [["daemon heartbeat", h.heartbeat_age_s === null ? '<span class="bad">none yet</span>'
      : `<span class="${h.heartbeat_age_s > 3.5 ? "bad" : "good"}">${h.heartbeat_age_s} s ago</span>`]];
    rows.push(["verdict bus", s.run_id ? `run <code>${esc(s.run_id.slice(0, 12))}</code> · last seq ${s.last_seq} · ${s.verdicts_seen} seen` : "waiting"]);
    for (const [cam, c] of Object.entries(h.cameras)) {
      const good = c.state === "running";
      rows.push([`camera ${esc(cam)}`, `<span class="${good ? "good" : "bad"}">${esc(c.state)}</span> · ${c.frames ?? 0} frames · ${c.reconnects ?? 0} reconnects` +
        (c.stream ? ` · ${c.stream.failures} incomplete frames · ${c.stream.missing_packets} packets lost` : "")]);
    }
    for (const st of Object.values(s.stations)) {
      const m = st.model;
      const q = (h.station_counters[st.name] || {}).queue;
      rows.push([`station ${esc(st.name)}`, `${m ? `${esc(m.name)} ${esc(m.version)} <code>${esc(m.sha256.slice(0, 12))}</code>` : "no model seen yet"}` +
        `${q === undefined ? "" : ` · queue ${q}`}`]);
    }
    for (const b of h.bridges || []) {
      const cls = { connected: "good", retrying: "warn", down: "bad" }[b.state] || "";
      rows.push([`bridge ${esc(b.name || b.endpoint)}`, `<span class="${cls}" data-bridge="${esc(b.name || b.endpoint)}" data-state="${esc(b.state)}">${esc(b.state)}</span>` +
        ` · ${b.age_s === null ? "no health message" : `${b.age_s} s ago`}${b.last_seq === null ? "" : ` · last seq ${b.last_seq}`}` +
        `${b.lost ? ` · lost ${b.lost}` : ""}${b.backlog ? ` · backlog ${b.backlog}` : ""}${b.retries ? ` · ${b.retries} retries` : ""}`]);
    }
    this.dialog.querySelector(".health tbody").innerHTML = rows.map(([k, v]) => `<tr><td>${k}</td><td>${v}</td></tr>`).join("");
    this.dialog.querySelector(".acks tbody").innerHTML = s.acks.length
      ? s.acks.map((a) => `<tr><td>${hms(a.at * 1000)}</td><td>${esc(a.by)}: ${esc(a.text)}</td></tr>`).join("")
      : '<tr><td colspan="2" class="dim">none yet</td></tr>';
  }
}
