// The live feed: server-sent events from /events, the connection's state and the age of the
// last update. Stale data is flagged, never shown as if it were current.
export const STALE_S = 3;        // no update from the HMI server for this long: stale
export const HEARTBEAT_S = 3.5;  // no heartbeat from the daemon for this long: stale

export class Feed {
  constructor(onSnapshot) {
    this.onSnapshot = onSnapshot;
    this.open = false;
    this.lastAt = null;        // performance.now() of the last snapshot
    this.offsetMs = 0;         // server clock minus this panel's clock
    this.snapshot = null;
    this.stats = { events: 0, errors: 0 };
  }

  connect() {
    const src = new EventSource("events");
    src.onopen = () => { this.open = true; };
    src.onerror = () => { this.open = false; this.stats.errors += 1; };
    src.onmessage = (e) => {
      const snap = JSON.parse(e.data);
      this.stats.events += 1;
      this.lastAt = performance.now();
      this.offsetMs = snap.server_ms - Date.now();
      this.snapshot = snap;
      this.onSnapshot(snap);
    };
    this.source = src;
  }

  /** Seconds since the last snapshot arrived (null before the first). */
  age() {
    return this.lastAt === null ? null : (performance.now() - this.lastAt) / 1000;
  }

  /** The server's wall clock now, in ms (for ages of things the server dated). */
  serverNow() {
    return Date.now() + this.offsetMs;
  }

  /** {state: connecting|live|reconnecting|stale, why} */
  status() {
    const age = this.age();
    if (age === null) return { state: this.open ? "connecting" : "reconnecting", why: "no update yet" };
    if (!this.open && age > STALE_S) return { state: "reconnecting", why: `no connection to the HMI for ${Math.round(age)} s` };
    if (age > STALE_S) return { state: "stale", why: `no update from the HMI for ${Math.round(age)} s` };
    const hb = this.snapshot.health.heartbeat_age_s;
    if (hb === null || hb + age > HEARTBEAT_S) {
      const since = hb === null ? "yet" : `for ${Math.round(hb + age)} s`;
      return { state: "stale", why: `no heartbeat from the daemon ${since}` };
    }
    return { state: "live", why: "" };
  }
}
