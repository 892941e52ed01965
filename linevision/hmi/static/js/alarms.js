// The alarm list: what is wrong, since when, how often this shift, what to check (the
// runbook of docs/operations.md, sent by the server), and acknowledgement by an operator.
// Rows are kept by key and updated in place, so a button never moves under a finger.
import { $, ago, alarmIcon, el, esc, hms, md, ordinal, setAttr, setText } from "./util.js";

const SHOWN = 3;
const OPERATOR_KEY = "linevision.operator";

export class Alarms {
  constructor(feed) {
    this.feed = feed;
    this.root = $("alarms");
    this.rows = new Map();
    this.expanded = false;
    this.more = el(`<div class="more"><button class="btn" type="button"></button></div>`);
    this.more.querySelector("button").addEventListener("click", () => { this.expanded = !this.expanded; this.render(this.feed.snapshot); });
    this.dialog = $("ack");
    this.key = null;
    $("ack-cancel").addEventListener("click", () => this.dialog.close());
    $("ack-form").addEventListener("submit", (e) => { e.preventDefault(); this.submit(); });
  }

  row(a) {
    let r = this.rows.get(a.key);
    if (r) return r;
    const node = el(`<div class="alarm" data-key="${esc(a.key)}" data-code="${esc(a.code)}" role="alert">
      <span class="i"></span><div class="what"><b></b><code>${esc(a.code)}</code></div>
      <div class="info"><div class="when"></div><div class="check"></div></div>
      <div class="act"><button class="btn" type="button" data-ack>ACK</button><div class="ack-by" hidden></div></div></div>`);
    node.querySelector("[data-ack]").addEventListener("click", () => this.ask(node.dataset.key));
    r = { node, icon: node.querySelector(".i"), text: node.querySelector(".what b"), when: node.querySelector(".when"),
      check: node.querySelector(".check"), button: node.querySelector("[data-ack]"), by: node.querySelector(".ack-by"),
      level: null, runbook: null };
    this.rows.set(a.key, r);
    return r;
  }

  render(snap) {
    if (!snap) return;
    const now = this.feed.serverNow();
    const keys = new Set(snap.alarms.map((a) => a.key));
    for (const [key, r] of this.rows) if (!keys.has(key)) { r.node.remove(); this.rows.delete(key); }
    snap.alarms.forEach((a, i) => {
      const r = this.row(a);
      if (r.level !== a.level) { r.icon.innerHTML = alarmIcon(a.level); r.level = a.level; }
      setAttr(r.node, "class", `alarm ${a.level}${a.acked ? " acked" : ""}`);
      setText(r.text, a.text);
      r.text.title = a.text;
      const times = a.count > 1 ? ` · ${ordinal(a.count)} time this shift` : " · 1st time this shift";
      setText(r.when, `since ${hms(a.since)} (${ago((now - a.since) / 1000)})${times}`);
      const book = a.runbook ? `<span>Check:</span> ${md(a.runbook.action)}` : "<span>Check:</span> see docs/operations.md";
      if (r.runbook !== book) { r.check.innerHTML = book; r.runbook = book; r.check.title = a.runbook ? a.runbook.means : ""; }
      r.button.hidden = Boolean(a.acked);
      r.by.hidden = !a.acked;
      if (a.acked) setText(r.by, `acknowledged by ${a.acked.by} at ${hms(a.acked.at)}`);
      r.node.hidden = !this.expanded && i >= SHOWN;
      if (this.root.children[i] !== r.node) this.root.insertBefore(r.node, this.root.children[i] || null);
    });
    const extra = snap.alarms.length - SHOWN;
    if (extra > 0) {
      setText(this.more.querySelector("button"), this.expanded ? "show fewer" : `+${extra} more alarm${extra > 1 ? "s" : ""}`);
      if (this.more.parentNode !== this.root || this.root.lastElementChild !== this.more) this.root.appendChild(this.more);
    } else if (this.more.parentNode) {
      this.more.remove();
    }
    this.root.classList.toggle("expanded", this.expanded);
  }

  ask(key) {
    const snap = this.feed.snapshot;
    const a = snap && snap.alarms.find((x) => x.key === key);
    if (!a) return;
    this.key = key;
    $("ack-text").innerHTML = `<b>${esc(a.text)}</b><br><span class="dim">${a.runbook ? md(a.runbook.means) : esc(a.code)}</span>`;
    $("ack-error").textContent = "";
    $("ack-operator").value = localStorage.getItem(OPERATOR_KEY) || "";
    this.dialog.showModal();
    $("ack-operator").focus();
  }

  async submit() {
    const operator = $("ack-operator").value.trim();
    try {
      const r = await fetch("api/alarms/ack", {
        method: "POST", headers: { "Content-Type": "application/json" }, credentials: "same-origin",
        body: JSON.stringify({ alarm: this.key, operator }),
      });
      const reply = await r.json();
      if (!r.ok) { $("ack-error").textContent = reply.error || `refused (${r.status})`; return; }
      localStorage.setItem(OPERATOR_KEY, operator);
      this.dialog.close();
    } catch (err) {
      $("ack-error").textContent = `not sent: ${err}`;
    }
  }
}
