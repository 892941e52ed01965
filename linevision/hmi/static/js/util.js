// Small helpers every part of the page uses (no framework, no build step).
export const $ = (id) => document.getElementById(id);
const ENTITIES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
export const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ENTITIES[c]);
/** Runbook text: escaped, with `code` spans kept as code. */
export const md = (v) => esc(v).replace(/`([^`]+)`/g, "<code>$1</code>");
export const pct = (y, digits = 1) => (y === null || y === undefined ? "–" : (100 * y).toFixed(digits) + " %");
export const num = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-GB"));
export const ms = (v) => (v === null || v === undefined ? "–" : Number(v).toFixed(1));
export const hms = (epochMs) => new Date(epochMs).toLocaleTimeString("en-GB");

/** "4 s", "3 min", "2 h 5 min" */
export function ago(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
  const s = Math.max(0, seconds);
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export function ordinal(n) {
  const s = ["th", "st", "nd", "rd"], v = n % 100;
  return n + (s[(v - 20) % 10] || s[v] || s[0]);
}

/** An element from an HTML string (one root). */
export function el(html) {
  const t = document.createElement("template");
  t.innerHTML = html.trim();
  return t.content.firstElementChild;
}

/** Set text only when it changed (cheap at 5 updates a second). */
export function setText(node, text) {
  const s = String(text);
  if (node.textContent !== s) node.textContent = s;
}

export function setAttr(node, name, value) {
  const s = String(value);
  if (node.getAttribute(name) !== s) node.setAttribute(name, s);
}

/** What the archive holds of a verdict: its description with the URLs of the files that exist,
 *  or {picture: null, why}. Asked first, so the page never requests a file that is not there. */
export async function describe(station, v) {
  const url = `api/picture/${encodeURIComponent(station)}/${encodeURIComponent(v.run_id)}/${v.seq}?t=${v.t_frame_ns}`;
  try {
    const r = await fetch(url);
    return r.ok ? await r.json() : { picture: null, why: `no answer (${r.status})` };
  } catch (err) {
    return { picture: null, why: `not reachable: ${err}` };
  }
}

/** OK and NG told apart by shape as well as colour: a circle with a tick, an octagon with a cross. */
export function glyph(verdict) {
  if (verdict === "OK") {
    return `<svg class="glyph" viewBox="0 0 64 64" role="img" aria-label="OK"><circle cx="32" cy="32" r="29" fill="var(--ok)"/>` +
      `<path d="M17 33l10 10 20-22" fill="none" stroke="#0f1419" stroke-width="7" stroke-linecap="round" stroke-linejoin="round"/></svg>`;
  }
  if (verdict === "NG") {
    return `<svg class="glyph" viewBox="0 0 64 64" role="img" aria-label="NG"><path d="M20 3h24l17 17v24L44 61H20L3 44V20z" fill="var(--ng)"/>` +
      `<path d="M21 21l22 22M43 21L21 43" stroke="#0f1419" stroke-width="7" stroke-linecap="round"/></svg>`;
  }
  return `<svg class="glyph" viewBox="0 0 64 64" role="img" aria-label="no verdict yet"><circle cx="32" cy="32" r="28" fill="none" stroke="var(--dim)" stroke-width="4" stroke-dasharray="8 6"/>` +
    `<path d="M22 32h20" stroke="var(--dim)" stroke-width="5" stroke-linecap="round"/></svg>`;
}

/** Critical: an octagon; warning: a triangle (shape and colour). */
export function alarmIcon(level) {
  return level === "critical"
    ? `<svg class="icon" viewBox="0 0 32 32" aria-label="critical"><path d="M10 1h12l9 9v12l-9 9H10l-9-9V10z" fill="var(--ng)"/><path d="M16 8v10M16 23v1" stroke="#fff" stroke-width="4" stroke-linecap="round"/></svg>`
    : `<svg class="icon" viewBox="0 0 32 32" aria-label="warning"><path d="M16 2l15 27H1z" fill="var(--warn)"/><path d="M16 11v9M16 25v1" stroke="#0f1419" stroke-width="4" stroke-linecap="round"/></svg>`;
}
