// scanstream dashboard. Plain JavaScript, no build step, no dependencies.
//
// A scan's page is a fold of its event log, done here exactly as the server's projection
// does it (fold.js, a port of scanstream/projection.py): events arrive over Server-Sent Events
// (EventSource reconnects by itself and resumes with Last-Event-ID), or, for a finished scan,
// from /v1/scans/{id}/log. When the scan ends, /results and /v1/scans/{id} are read once to
// confirm the fold (and to take over if they disagree), and the whole log is kept for the
// replay: a scrubber that shows the fold of the first N events, for any N.
"use strict";

const { TERMINAL_TYPES, TERMINAL_SCAN } = ScanFold;
const EVENT_TYPES = ["scan.requested", "strategy.started", "strategy.progress",
  "opportunity.found", "strategy.completed", "strategy.failed", "scan.cancel_requested",
  "scan.completed", "scan.failed", "scan.cancelled", "invalid"];
const TOKEN_KEY = "scanstream.token";
const THEME_KEY = "scanstream.theme";
const LOG_KEEP = 300; // events kept in the event-log panel
const RENDER_MS = 100;
const MAX_ROWS = 1000; // opportunities drawn at once (sorting and filtering see them all)
const CHECKPOINT_EVERY = 256; // the replay keeps a folded view every so many events

// ---------------------------------------------------------------- small helpers

const $ = (id) => document.getElementById(id);

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k === "width") el.style.width = v;
    else if (k === "left") el.style.left = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function idKey(id) {
  const [ms, seq] = String(id).split("-");
  return [BigInt(ms || 0), BigInt(seq || 0)];
}

function idAfter(a, b) { // is stream id a after b?
  if (!b) return true;
  const [am, as] = idKey(a), [bm, bs] = idKey(b);
  return am > bm || (am === bm && as > bs);
}

function tsMs(ts) { const t = Date.parse(ts); return Number.isFinite(t) ? t : null; }

function fmtDuration(ms) {
  if (ms === null || ms === undefined || ms < 0) return "–";
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)}s`;
  const m = Math.floor(s / 60), r = Math.round(s % 60);
  if (m < 60) return `${m}m ${String(r).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
}

function fmtTime(ts) {
  const t = tsMs(ts);
  if (t === null) return "–";
  const d = new Date(t);
  const sameDay = new Date().toDateString() === d.toDateString();
  return sameDay ? d.toLocaleTimeString([], { hour12: false })
    : d.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", hour12: false });
}

function fmtAgo(ts) {
  const t = tsMs(ts);
  if (t === null) return "";
  const s = Math.max(0, (Date.now() - t) / 1000);
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

function pct(x) { return `${Math.floor((x || 0) * 100 + 1e-9)}%`; }

function toast(text, ms = 2600) {
  const el = $("toast");
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, ms);
}

// ---------------------------------------------------------------- token and API

// The long-lived token: sent in the Authorization header only, never in a URL. The event
// stream, which a browser can only authenticate through its URL, gets a stream token of its
// own (one scan, a minute) for each connection: see connect().
let token = localStorage.getItem(TOKEN_KEY) || "";

function b64text(part) {
  const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
  const bin = atob(b64 + "=".repeat((4 - b64.length % 4) % 4));
  return new TextDecoder("utf-8", { fatal: true }).decode(Uint8Array.from(bin, (c) => c.charCodeAt(0)));
}

// What a token says of itself: its user and expiry (unix s, or null for an old token that
// never expires). Unverified: only the server's answer to the token makes it true.
function claimsOf(tok) {
  const parts = String(tok || "").split(".");
  try {
    if (parts.length === 3) { // a JWT: {"sub", "exp"}
      const c = JSON.parse(b64text(parts[1]));
      return { user: typeof c.sub === "string" ? c.sub : null, exp: Number.isInteger(c.exp) ? c.exp : null };
    }
    if (parts.length === 2) return { user: b64text(parts[0]), exp: null }; // user.mac
  } catch { /* not a token we can read */ }
  return { user: null, exp: null };
}

function userOf(tok) { return claimsOf(tok).user; }

function useToken(value) {
  token = value;
  localStorage.setItem(TOKEN_KEY, value);
}

class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail || code);
    this.status = status; this.code = code; this.detail = detail;
  }
}

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${token}`, ...(options.headers || {}) };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (err) {
    throw new ApiError(0, "network", "The server cannot be reached.");
  }
  let body = null;
  const text = await response.text();
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  if (!response.ok) {
    const err = new ApiError(response.status, body?.error || "error", body?.detail || response.statusText);
    if (response.status === 401) showGate("The token was refused: " + err.detail);
    throw err;
  }
  return body;
}

// ---------------------------------------------------------------- the fold
// fold.js holds it (ScanFold): the same rules as scanstream/projection.py.

const progressOf = ScanFold.progress;
const countState = ScanFold.countState;
const rankedOpportunities = ScanFold.ranked;

// ---------------------------------------------------------------- the open scan

// `window.scanstream` is what a test (or a curious person in the console) can read.
const state = {
  current: null,   // { id, view, source, es, lastId, received, duplicates, ended, ... }
  sort: { key: "score", dir: -1 },
  filter: "",
  scansCursor: null,
  strategies: [],
};
window.scanstream = state;

function closeStream() {
  const cur = state.current;
  if (!cur) return;
  if (cur.es) { cur.es.close(); cur.es = null; }
  clearTimeout(cur.retryTimer);
  clearInterval(cur.clock);
}

async function openScan(scanId, { push = true } = {}) {
  closeStream();
  const cur = {
    id: scanId, view: ScanFold.empty(scanId), es: null, lastId: null, received: [],
    duplicates: 0, ended: false, reconnects: 0, retryDelay: 1000, log: [],
    results: null, source: "live", mismatch: null, seenAt: new Map(), replay: null,
  };
  state.current = cur;
  if (push && location.hash !== `#scan=${scanId}`) history.replaceState(null, "", `#scan=${scanId}`);
  $("empty").hidden = true;
  $("scan").hidden = false;
  markActive();
  render();
  let status;
  try {
    status = await api(`/v1/scans/${encodeURIComponent(scanId)}`);
  } catch (err) {
    if (state.current !== cur) return;
    $("scan").hidden = true;
    $("empty").hidden = false;
    $("empty").querySelector("h2").textContent = err.status === 404 ? "No such scan" : "Cannot open the scan";
    $("empty").querySelector("p").textContent = err.detail || String(err);
    return;
  }
  if (state.current !== cur) return;
  if (TERMINAL_SCAN.has(status.state)) {
    cur.source = "log";
    const entries = await loadLog(cur);
    if (state.current !== cur) return;
    if (entries) startReplay(cur, entries);
    await finish(cur);
  } else {
    connect(cur);
    cur.clock = setInterval(() => scheduleRender(), 1000);
  }
}

async function readLog(cur, onPage) { // every entry of /log, page after page until `next` is null
  const entries = [];
  let after = null;
  do {
    const q = new URLSearchParams({ limit: "1000" });
    if (after) q.set("after", after);
    const page = await api(`/v1/scans/${cur.id}/log?${q}`);
    if (state.current !== cur) return null;
    entries.push(...page.events);
    if (onPage) onPage(page.events);
    after = page.next;
  } while (after);
  return entries;
}

async function loadLog(cur) {
  setConn("connecting", "reading log");
  const entries = await readLog(cur, (events) => { for (const e of events) accept(cur, e); });
  if (entries) render();
  return entries;
}

// Each connection gets a stream token of its own (POST .../stream-token: this scan's events
// only, for a minute), so the URL never carries the long-lived token. EventSource is never
// left to reconnect by itself, since it would reuse the URL and its token after it expired:
// on any error we close it, and connect again, with a new token, after the last event we have.
async function connect(cur) {
  setConn("connecting", cur.reconnects ? "reconnecting" : "connecting");
  let minted;
  try {
    minted = await api(`/v1/scans/${cur.id}/stream-token`, { method: "POST" });
  } catch (err) {
    if (state.current !== cur || cur.ended || err.status === 401) return; // 401: asked to sign in
    setConn("offline", "disconnected");
    retryLater(cur);
    return;
  }
  if (state.current !== cur || cur.ended) return;
  const q = new URLSearchParams({ access_token: minted.token });
  if (cur.lastId) q.set("after", cur.lastId); // a new EventSource sends no Last-Event-ID
  const es = new EventSource(`/v1/scans/${cur.id}/events?${q}`);
  cur.es = es;
  es.onopen = () => {
    if (state.current !== cur) return;
    cur.retryDelay = 1000;
    setConn("live", "live");
    if (cur.reconnects) refreshStatus(cur); // after a reconnect, check we are where the server is
  };
  es.onerror = () => {
    if (state.current !== cur || cur.ended || cur.es !== es) return;
    cur.reconnects += 1;
    es.close();
    cur.es = null;
    setConn("reconnecting", "reconnecting");
    refreshStatus(cur).then((status) => { // the scan may have ended meanwhile (or a 204 said so)
      if (state.current !== cur || cur.ended) return;
      if (status && TERMINAL_SCAN.has(status.state)) { loadRest(cur); return; }
      retryLater(cur);
    });
  };
  for (const type of EVENT_TYPES) es.addEventListener(type, (msg) => onMessage(cur, msg));
}

function retryLater(cur) {
  clearTimeout(cur.retryTimer);
  cur.retryTimer = setTimeout(() => connect(cur), cur.retryDelay);
  cur.retryDelay = Math.min(cur.retryDelay * 2, 15000);
}

function onMessage(cur, msg) {
  if (state.current !== cur) return;
  let e;
  try { e = JSON.parse(msg.data); } catch { return; }
  accept(cur, e);
  if (TERMINAL_TYPES.has(e.type) && e.problem === undefined) {
    cur.ended = true;
    if (cur.es) { cur.es.close(); cur.es = null; } // the stream is over: no reconnect loop
    finish(cur);
  }
}

function accept(cur, e) {
  if (!idAfter(e.id, cur.lastId)) { cur.duplicates += 1; return; } // never fold twice
  cur.lastId = e.id;
  cur.received.push(e.id);
  const oid = e.type === "opportunity.found" && e.problem === undefined ? e.opportunity?.id : undefined;
  const had = oid !== undefined && cur.view.opportunities.has(oid);
  ScanFold.apply(cur.view, e);
  if (oid !== undefined && !had && cur.view.opportunities.has(oid)) cur.seenAt.set(oid, performance.now());
  cur.log.push(e);
  if (cur.log.length > LOG_KEEP) cur.log.splice(0, cur.log.length - LOG_KEEP);
  scheduleRender();
}

async function loadRest(cur) { // the stream closed for good but the scan ended: read the log tail
  let after = cur.lastId;
  do {
    const q = new URLSearchParams({ limit: "1000" });
    if (after) q.set("after", after);
    const page = await api(`/v1/scans/${cur.id}/log?${q}`);
    for (const e of page.events) accept(cur, e);
    after = page.next;
  } while (after);
  cur.ended = true;
  finish(cur);
}

async function refreshStatus(cur) {
  try {
    const status = await api(`/v1/scans/${cur.id}`);
    if (state.current === cur) cur.status = status;
    return status;
  } catch { return null; }
}

async function finish(cur) {
  clearInterval(cur.clock);
  setConn("done", "ended");
  try {
    const [results, status] = await Promise.all([
      api(`/v1/scans/${cur.id}/results`), api(`/v1/scans/${cur.id}`)]);
    if (state.current !== cur) return;
    cur.results = results;
    cur.status = status;
    const mine = rankedOpportunities(cur.view).map((o) => o.id).join(",");
    const theirs = results.opportunities.map((o) => o.id).join(",");
    cur.mismatch = mine !== theirs;
    if (cur.mismatch) { // the fold disagrees with the server: show the server's answer
      console.warn("scanstream: the live fold differs from /results; showing /results");
      cur.view.opportunities = new Map(results.opportunities.map((o) => [o.id, o]));
    }
  } catch (err) {
    console.warn("scanstream: could not read the results", err);
  }
  if (cur.replay) checkReplay(cur);
  render();
  loadScans();
  if (!cur.replay && state.current === cur) { // watched live: read the whole log for the replay
    try {
      const entries = await readLog(cur);
      if (entries && state.current === cur) { startReplay(cur, entries); checkReplay(cur); render(); }
    } catch (err) {
      console.warn("scanstream: could not read the log for the replay", err);
    }
  }
}

// ---------------------------------------------------------------- the replay
// A finished scan's whole log, and a position N in it (1..length): the page then shows the
// fold of the first N entries, as the server's projection would have shown it then.

function startReplay(cur, entries) {
  if (!entries.length) return;
  const checkpoints = [];
  const v = ScanFold.empty(cur.id);
  entries.forEach((e, i) => {
    if (i % CHECKPOINT_EVERY === 0) checkpoints.push(ScanFold.copy(v));
    ScanFold.apply(v, e);
  });
  const times = [];
  let last = null;
  for (const e of entries) { // an unreadable entry has no ts: its stream id tells when it came
    const t = (e.ts ? tsMs(e.ts) : null) ?? Number(String(e.id).split("-")[0]);
    last = Number.isFinite(t) ? t : last;
    times.push(last);
  }
  cur.replay = { entries, times, checkpoints, final: v, pos: entries.length, view: v, differs: null };
  const range = $("replay-range");
  range.max = String(entries.length);
  range.value = String(entries.length);
}

function viewAt(r, n) {
  if (n === r.entries.length) return r.final;
  const k = Math.floor(n / CHECKPOINT_EVERY);
  return ScanFold.fold(r.checkpoints[k], r.entries.slice(k * CHECKPOINT_EVERY, n));
}

function scrubTo(cur, n) {
  const r = cur?.replay;
  if (!r) return;
  n = Math.min(r.entries.length, Math.max(1, Math.round(Number(n)) || 1));
  if (n !== r.pos) {
    r.pos = n;
    r.view = viewAt(r, n);
  }
  render();
}

function checkReplay(cur) { // the fold of the whole log against what the server said
  const r = cur.replay;
  if (!cur.status || !cur.results) return;
  const mine = ScanFold.status(r.final), theirs = cur.status;
  const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
  const differs = [];
  if (mine.state !== theirs.state) differs.push("state");
  if (!same(mine.strategies, theirs.strategies)) differs.push("strategies");
  if (!same(ScanFold.results(r.final).opportunities.map((o) => o.id),
            cur.results.opportunities.map((o) => o.id))) differs.push("opportunities");
  r.differs = differs;
  if (differs.length) console.warn("scanstream: the fold of the log differs from the server on", differs);
}

function replayAtEnd(r) { return !r || r.pos === r.entries.length; }

// What the page shows: the live (or confirmed) view, or the replay's view at its position.
function shownView(cur) {
  const r = cur.replay;
  if (!r || (replayAtEnd(r) && (cur.mismatch || r.differs?.length))) return cur.view;
  return r.view;
}

function replayNow(cur) { // the clock of the shown view: the scrubbed event's time, or now
  const r = cur.replay;
  return r && !replayAtEnd(r) ? r.times[r.pos - 1] : Date.now();
}

function nearestEvent(r, t) { // the last event at or before time t (the first one if none)
  let best = 1;
  for (let i = 0; i < r.times.length; i += 1) if (r.times[i] <= t) best = i + 1;
  return best;
}

function renderReplay(cur) {
  const r = cur.replay;
  $("replay").hidden = !r;
  $("scan-asof").hidden = replayAtEnd(r);
  if (!r) return;
  const total = r.entries.length, e = r.entries[r.pos - 1];
  const range = $("replay-range");
  if (range.value !== String(r.pos)) range.value = String(r.pos);
  range.setAttribute("aria-valuetext", `event ${r.pos} of ${total}: ${e.type}`);
  $("replay").dataset.pos = String(r.pos);
  $("replay").dataset.total = String(total);
  $("replay").dataset.eventId = e.id;
  $("replay-pos").textContent = `${r.pos} / ${total}`;
  $("replay-first").disabled = $("replay-prev").disabled = r.pos <= 1;
  $("replay-next").disabled = $("replay-last").disabled = r.pos >= total;
  const t = r.times[r.pos - 1], t0 = tsMs(r.final.created_at);
  $("replay-at").textContent = fmtClock(t);
  $("replay-off").textContent = t0 === null || t === null ? "" : `+${fmtOffset(t - t0)}`;
  const ty = $("replay-type");
  ty.textContent = e.type || "(no type)";
  ty.className = `ty ${e.problem !== undefined ? "problem" : typeClass(e.type)}`;
  $("replay-who").textContent = e.strategy ? `${e.strategy}${e.attempt > 1 ? ` #${e.attempt}` : ""}` : "";
  $("replay-sum").textContent = summary(e);
  $("replay-sum").title = summary(e);
  $("scan-asof").textContent = `as of event ${r.pos} / ${total}`;
  const warnBox = $("replay-warning");
  warnBox.hidden = !r.differs?.length;
  if (r.differs?.length) {
    warnBox.textContent = `The fold of the log differs from the server on ${r.differs.join(", ")}; `
      + "at the last event the page shows the server's answer.";
  }
}

function typeClass(type) {
  if (type === "strategy.completed" || type === "scan.completed") return "ok";
  if (type === "strategy.failed" || type === "scan.failed") return "bad";
  if (type === "scan.cancelled" || type === "scan.cancel_requested") return "warn";
  if (type === "opportunity.found") return "found";
  return "";
}

function fmtClock(t) {
  if (t === null || t === undefined) return "–";
  const d = new Date(t);
  return `${d.toLocaleTimeString([], { hour12: false })}.${String(d.getMilliseconds()).padStart(3, "0")}`;
}

function fmtOffset(ms) { return ms < 60000 ? `${(ms / 1000).toFixed(3)}s` : fmtDuration(ms); }

// ---------------------------------------------------------------- rendering

let renderTimer = null;
let lastRender = 0;

function scheduleRender() {
  if (renderTimer) return;
  const wait = Math.max(0, RENDER_MS - (performance.now() - lastRender));
  renderTimer = setTimeout(() => { renderTimer = null; render(); }, wait);
}

function setConn(kind, text) {
  $("conn").dataset.state = kind;
  $("conn-text").textContent = text;
}

function render() {
  lastRender = performance.now();
  const cur = state.current;
  if (!cur) return;
  const v = shownView(cur);
  const now = replayNow(cur);
  const progress = progressOf(v);

  $("scan-id").textContent = v.scan_id;
  const badge = $("scan-state");
  badge.textContent = v.user_id === null ? "loading" : v.state;
  badge.className = `badge s-${v.state}`;
  $("scan-reason").textContent = v.end_reason ? `(${v.end_reason})`
    : v.cancel_requested && !TERMINAL_SCAN.has(v.state) ? "cancelling…" : "";
  $("cancel").hidden = TERMINAL_SCAN.has(cur.view.state) || cur.view.user_id === null;
  $("overall-fill").style.width = `${progress * 100}%`;
  $("overall-fill").className = `fill s-${TERMINAL_SCAN.has(v.state) ? v.state : "running"}`;
  $("overall-bar").setAttribute("aria-valuenow", String(Math.round(progress * 100)));
  $("overall-pct").textContent = pct(progress);

  const total = v.strategies.size;
  const completed = countState(v, "completed"), failed = countState(v, "failed");
  $("stat-strategies").textContent = total ? `${completed + failed} / ${total}` : "–";
  $("stat-failed").textContent = String(failed);
  $("stat-failed").classList.toggle("neg", failed > 0);
  $("stat-opps").textContent = String(v.opportunities.size);
  const start = tsMs(v.created_at);
  const end = v.finished_at ? tsMs(v.finished_at) : now;
  $("stat-elapsed").textContent = start === null ? "–" : fmtDuration(end - start);
  $("stat-created").textContent = fmtTime(v.created_at);
  $("stat-events").textContent = String(v.events);
  const warn = $("scan-warnings");
  const skipped = v.warnings_count;
  warn.hidden = !skipped;
  warn.textContent = `${skipped} log ${skipped === 1 ? "entry was" : "entries were"} skipped (unreadable, repeated or late).`;

  const r = cur.replay;
  const e = r && !replayAtEnd(r) ? r.entries[r.pos - 1] : null; // the scrubbed-to event
  renderReplay(cur);
  renderStrategies(v, now, e?.strategy);
  renderTimeline(r ? r.final : v, r ? r.times[r.pos - 1] : null);
  renderOpportunities(cur, v, e?.type === "opportunity.found" ? e.opportunity?.id : null);
  renderLog(cur, r ? r.entries[r.pos - 1].id : null);
}

function renderStrategies(v, now, current) {
  const rows = [];
  for (const s of v.strategies.values()) {
    const started = tsMs(s.started_at);
    const took = started === null ? null : (s.finished_at ? tsMs(s.finished_at) : now) - started;
    const failedMsg = s.error && s.state !== "completed" ? `${s.error.type}: ${s.error.message}` : null;
    rows.push(h("tr", {
      "data-strategy": s.name, "data-state": s.state, "data-attempts": String(s.attempts),
      "data-progress": String(ScanFold.round4(s.progress)), "data-found": String(s.opportunities),
      class: s.name === current ? "current" : null },
      h("td", { class: "name", text: s.name }),
      h("td", {},
        h("span", { class: `badge s-${s.state}`, text: s.state }),
        s.attempts > 1 ? h("span", { class: "attempt", title: "attempt", text: `#${s.attempts}` }) : null),
      h("td", {}, h("div", { class: "progress-cell" },
        h("div", { class: "bar" }, h("div", {
          class: `fill s-${s.state}`,
          width: `${(s.state === "completed" ? 1 : s.progress) * 100}%` })),
        h("span", { class: "pct mono", text: pct(s.state === "completed" ? 1 : s.progress) }))),
      h("td", { class: "num", text: s.opportunities ? String(s.opportunities) : "·" }),
      h("td", { class: "num", text: took === null ? "–" : fmtDuration(took) }),
      h("td", { class: `msg${failedMsg ? " err" : ""}`, title: failedMsg || s.message,
                text: failedMsg || s.message })));
  }
  $("strategies").tBodies[0].replaceChildren(...rows);
}

// `marker`: the time of the replay's event (ms), drawn as a line with what follows it dimmed.
function renderTimeline(v, marker = null) {
  const box = $("timeline");
  const t0 = tsMs(v.created_at);
  box.classList.toggle("scrubbable", marker !== null);
  if (t0 === null || !v.strategies.size) {
    box.replaceChildren(h("div", { class: "none", text: "Waiting for the scan to start." }));
    return;
  }
  const t1 = Math.max(t0 + 1000, v.finished_at ? tsMs(v.finished_at) : Date.now());
  const span = t1 - t0;
  renderTimeline.span = { t0, span };
  const at = marker === null ? null : `${Math.min(100, Math.max(0, (marker - t0) / span * 100))}%`;
  const now = () => (at === null ? [] : [h("div", { class: "future", left: at }), h("div", { class: "now", left: at })]);
  const parts = [];
  for (const s of v.strategies.values()) {
    parts.push(h("div", { class: "label", text: s.name }));
    const segs = s.runs.map((r) => {
      const left = Math.max(0, ((tsMs(r.start) ?? t0) - t0) / span * 100);
      const right = Math.min(100, (((r.end ? tsMs(r.end) : t1) ?? t1) - t0) / span * 100);
      return h("div", {
        class: `seg ${r.result}`, left: `${left}%`, width: `${Math.max(0, right - left)}%`,
        title: `${s.name} attempt ${r.attempt}: ${r.result}, ${fmtDuration(
          ((r.end ? tsMs(r.end) : Date.now()) ?? 0) - (tsMs(r.start) ?? 0))}` });
    });
    parts.push(h("div", { class: "track" }, segs, now()));
  }
  const ticks = [];
  const step = niceStep(span / 6);
  for (let t = 0; t <= span + 1; t += step) {
    const label = step < 1000 ? `${+(t / 1000).toFixed(2)}s` : fmtDuration(t);
    ticks.push(h("span", { class: "tick", left: `${(t / span) * 100}%`, text: label }));
  }
  if (at !== null) ticks.push(h("span", { class: "now-head", left: at }));
  parts.push(h("div", {}), h("div", { class: "axis" }, ticks));
  box.replaceChildren(...parts);
}

function onTimelineClick(ev) { // jump the replay to the last event at the clicked time
  const cur = state.current, r = cur?.replay, span = renderTimeline.span;
  const track = $("timeline").querySelector(".track");
  if (!r || !span || !track) return;
  const box = track.getBoundingClientRect();
  if (ev.clientX < box.left - 4) return; // a strategy's label
  const frac = Math.min(1, Math.max(0, (ev.clientX - box.left) / box.width));
  scrubTo(cur, nearestEvent(r, span.t0 + frac * span.span));
}

function niceStep(ms) {
  const steps = [250, 500, 1000, 2000, 5000, 10000, 15000, 30000, 60000, 120000, 300000,
    600000, 900000, 1800000, 3600000, 7200000];
  return steps.find((s) => s >= ms) || 14400000;
}

const cmpStr = (a, b) => (a < b ? -1 : a > b ? 1 : 0); // code-point order, like the server
const SORTERS = {
  score: (a, b) => a.score - b.score,
  expected_return: (a, b) => a.expected_return - b.expected_return,
  strategy: (a, b) => cmpStr(a.strategy, b.strategy),
  symbol: (a, b) => cmpStr(a.symbol, b.symbol),
  side: (a, b) => cmpStr(a.side, b.side),
  details: (a, b) => cmpStr(detailsText(a), detailsText(b)),
};

function detailsText(o) {
  return Object.entries(o.details || {}).map(([k, v]) =>
    `${k}=${typeof v === "number" ? +v.toPrecision(4) : JSON.stringify(v)}`).join("  ");
}

function renderOpportunities(cur, v, current) {
  const ranked = rankedOpportunities(v);
  const rank = new Map(ranked.map((o, i) => [o.id, i + 1]));
  let rows = ranked;
  const { key, dir } = state.sort;
  if (key !== "rank" && !(key === "score" && dir === -1)) {
    const cmp = SORTERS[key] || SORTERS.score;
    rows = [...ranked].sort((a, b) => dir * cmp(a, b) || rank.get(a.id) - rank.get(b.id));
  } else if (key === "rank" && dir === -1) {
    rows = [...ranked].reverse();
  }
  const f = state.filter.trim().toLowerCase();
  if (f) {
    rows = rows.filter((o) => `${o.symbol} ${o.strategy} ${o.side} ${o.id}`.toLowerCase().includes(f));
  }
  const now = performance.now();
  const shown = rows.length > MAX_ROWS ? rows.slice(0, MAX_ROWS) : rows;
  const trs = shown.map((o) => {
    const er = o.expected_return;
    const seen = replayAtEnd(cur.replay) ? cur.seenAt.get(o.id) : undefined;
    const age = seen ? now - seen : Infinity;
    const tr = h("tr", { "data-id": o.id,
                         class: o.id === current ? "current" : age < 1500 ? "fresh" : null },
      h("td", { class: "num muted", text: String(rank.get(o.id)) }),
      h("td", { class: "num" }, h("span", { class: "score" },
        h("span", { class: "mini" }, h("div", { width: `${o.score * 100}%` })),
        h("span", { text: o.score.toFixed(3) }))),
      h("td", { class: "name", text: o.strategy }),
      h("td", { class: "sym", text: o.symbol }),
      h("td", {}, h("span", { class: `side ${o.side}`, text: o.side })),
      h("td", { class: `num ${er > 0 ? "pos" : er < 0 ? "neg" : ""}`,
                text: `${er > 0 ? "+" : ""}${(er * 100).toFixed(2)}%` }),
      h("td", { class: "details", title: JSON.stringify(o.details || {}, null, 1), text: detailsText(o) }));
    if (age < 1500) for (const td of tr.cells) td.style.animationDelay = `-${Math.round(age)}ms`;
    return tr;
  });
  $("opps").tBodies[0].replaceChildren(...trs);
  $("opps-empty").hidden = trs.length > 0 && rows.length <= MAX_ROWS;
  $("opps-empty").textContent = rows.length > MAX_ROWS
    ? `Showing the first ${MAX_ROWS} of ${rows.length}: sort or filter to see others.`
    : v.opportunities.size ? "No opportunity matches the filter." : "Nothing found yet.";
  $("opp-count").textContent = f ? `${rows.length} of ${v.opportunities.size}` : String(v.opportunities.size);
  const r = cur.replay;
  $("opp-source").textContent = !replayAtEnd(r) ? `as of event ${r.pos}`
    : cur.results ? "confirmed by /results" : cur.source === "live" ? "live" : "";
  for (const th of $("opps").tHead.rows[0].cells) {
    if (th.dataset.key === key) th.setAttribute("aria-sort", dir < 0 ? "descending" : "ascending");
    else th.removeAttribute("aria-sort");
  }
}

function summary(e) {
  if (e.problem !== undefined) return e.problem;
  switch (e.type) {
    case "scan.requested": return `${e.strategies.length} strategies ${JSON.stringify(e.params)}`;
    case "strategy.started": return `attempt ${e.attempt} on ${e.worker}`;
    case "strategy.progress": return `${pct(e.progress)} ${e.message || ""}`;
    case "opportunity.found": return `${e.opportunity.symbol} ${e.opportunity.side} score ${e.opportunity.score.toFixed(3)}`;
    case "strategy.completed": return `${e.opportunities} found in ${fmtDuration(e.duration_ms)}`;
    case "strategy.failed": return `${e.final ? "final" : "will retry"}: ${e.error.type}: ${e.error.message}`;
    default:
      if (TERMINAL_TYPES.has(e.type)) return `${e.opportunities} opportunities, ${e.strategies_completed} completed, ${e.strategies_failed} failed`;
      return "";
  }
}

// Newest first. With a replay: the entries around its position, the later ones dimmed, and a
// click on one moves the replay there.
function renderLog(cur, currentId = null) {
  const r = cur.replay;
  $("log-count").textContent = String(r ? r.entries.length : cur.view.events);
  if (!$("log-panel").open) return;
  let shown = cur.log, first = 0;
  if (r) {
    first = Math.max(0, Math.min(r.pos - Math.ceil(LOG_KEEP / 2), r.entries.length - LOG_KEEP));
    shown = r.entries.slice(first, first + LOG_KEEP);
  }
  const items = shown.map((e, i) => h("li", {
    "data-id": e.id,
    class: [e.problem !== undefined ? "problem" : "", e.id === currentId ? "current" : "",
            r && first + i >= r.pos ? "later" : ""].filter(Boolean).join(" ") || null,
    onclick: r ? () => scrubTo(cur, first + i + 1) : null,
    title: r ? `Replay to event ${first + i + 1}` : null },
    h("span", { class: "t", text: e.id }),
    h("span", { class: "t", text: e.ts ? fmtTime(e.ts) : "" }),
    h("span", { class: "ty", text: e.type }),
    h("span", { class: "sum", text: `${e.strategy ? e.strategy + " · " : ""}${summary(e)}` })));
  const list = $("event-log");
  list.classList.toggle("scrubbable", !!r);
  list.replaceChildren(...items.reverse());
  const here = r ? list.querySelector("li.current") : null;
  if (here) { // keep the current entry in view, scrolling the list only (never the page)
    const top = here.offsetTop - list.offsetTop, bottom = top + here.offsetHeight;
    if (top < list.scrollTop) list.scrollTop = top;
    else if (bottom > list.scrollTop + list.clientHeight) list.scrollTop = bottom - list.clientHeight;
  }
}

// ---------------------------------------------------------------- scans list, new scan

async function loadScans(more = false) {
  try {
    const q = new URLSearchParams({ limit: "25" });
    if (more && state.scansCursor) q.set("cursor", state.scansCursor);
    const page = await api(`/v1/scans?${q}`);
    state.scansCursor = page.next;
    const items = page.scans.map((s) => h("li", {
      "data-scan": s.scan_id, onclick: () => openScan(s.scan_id), title: s.scan_id },
      h("span", { class: `dot s-${s.state}` }),
      h("span", { class: "sid", text: s.scan_id.slice(0, 5) + "…" + s.scan_id.slice(-10) }),
      h("span", { class: `badge s-${s.state}`, text: s.state }),
      h("span", { class: "meta" },
        h("span", { text: fmtAgo(s.created_at) }),
        h("span", { text: `${s.strategies_total} strat.` }),
        h("span", { text: `${s.opportunities_found} found` }),
        s.state === "running" ? h("span", { class: "mini" }, h("div", { width: `${s.progress * 100}%` })) : null)));
    if (more) $("scan-list").append(...items);
    else $("scan-list").replaceChildren(...(items.length ? items
      : [h("li", { class: "empty-note", text: "No scans yet." })]));
    $("more-scans").hidden = !page.next;
    markActive();
    // While a listed scan runs, keep its row fresh (one small request every few seconds).
    clearTimeout(state.scansTimer);
    if (!more && page.scans.some((s) => !TERMINAL_SCAN.has(s.state))) {
      state.scansTimer = setTimeout(() => loadScans(), 4000);
    }
  } catch (err) {
    if (err.status !== 401) $("scan-list").replaceChildren(h("li", { class: "empty-note", text: err.detail }));
  }
}

function markActive() {
  const id = state.current?.id;
  for (const li of $("scan-list").children) li.classList.toggle("active", li.dataset.scan === id);
}

async function loadStrategies() {
  const body = await api("/v1/strategies");
  state.strategies = body.strategies;
  const saved = new Set(JSON.parse(localStorage.getItem("scanstream.picked") || "null") || []);
  const rows = body.strategies.map((s) => h("label", { title: s.description },
    h("input", { type: "checkbox", value: s.name, checked: saved.size ? saved.has(s.name) : true }),
    h("span", { class: "name", text: s.name }),
    h("span", { class: "desc", text: s.description })));
  $("strategy-pick").replaceChildren(...rows);
}

function picked() {
  return [...$("strategy-pick").querySelectorAll("input:checked")].map((i) => i.value);
}

async function startScan() {
  const err = $("start-error");
  err.textContent = "";
  const names = picked();
  if (!names.length) { err.textContent = "Choose at least one strategy."; return; }
  let params = {};
  const raw = $("params").value.trim();
  if (raw) {
    try { params = JSON.parse(raw); } catch (e) { err.textContent = `Params is not JSON: ${e.message}`; return; }
    if (params === null || typeof params !== "object" || Array.isArray(params)) {
      err.textContent = "Params must be a JSON object."; return;
    }
  }
  localStorage.setItem("scanstream.picked", JSON.stringify(names));
  const body = { params };
  if (names.length !== state.strategies.length) body.strategies = names;
  $("start").disabled = true;
  try {
    const status = await api("/v1/scans", { method: "POST", body: JSON.stringify(body) });
    await openScan(status.scan_id);
    loadScans();
  } catch (e) {
    err.textContent = e.detail || String(e);
  } finally {
    $("start").disabled = false;
  }
}

async function cancelScan() {
  const cur = state.current;
  if (!cur) return;
  $("cancel").disabled = true;
  try {
    await api(`/v1/scans/${cur.id}/cancel`, { method: "POST" });
    toast("Cancel requested.");
  } catch (e) {
    toast(e.detail || String(e));
  } finally {
    $("cancel").disabled = false;
  }
}

// ---------------------------------------------------------------- start-up

function showGate(message) {
  closeStream();
  $("app").hidden = true;
  $("switch-gate").hidden = true;
  $("token-gate").hidden = false;
  $("whoami").hidden = true;
  $("signout").hidden = true;
  $("token-error").textContent = message || "";
  $("token-input").value = "";
  $("token-input").focus();
}

async function enter() {
  const { user, exp } = claimsOf(token);
  $("token-gate").hidden = true;
  $("switch-gate").hidden = true;
  $("app").hidden = false;
  $("whoami").replaceChildren("signed in as ", h("b", { text: user || "?" }));
  $("whoami").title = exp ? `The token is good until ${new Date(exp * 1000).toLocaleString()}.`
    : "The token does not expire.";
  $("whoami").hidden = false;
  $("signout").hidden = false;
  try {
    await loadStrategies();
  } catch (err) {
    if (err.status !== 401) $("start-error").textContent = err.detail || String(err);
    return;
  }
  loadScans();
  const m = /#scan=(scan_[0-9a-f]{32})/.exec(location.hash);
  if (m) openScan(m[1], { push: false });
}

// ← / → step through the replay from anywhere on the page (shift: ten at a time), except
// while typing; on the range input itself the browser's own keys apply (Home, End, PageUp...).
function onReplayKey(ev) {
  const cur = state.current, r = cur?.replay;
  if (!r || $("app").hidden || $("scan").hidden || ev.altKey || ev.ctrlKey || ev.metaKey) return;
  if (ev.key !== "ArrowLeft" && ev.key !== "ArrowRight") return;
  const t = ev.target;
  if (t === $("replay-range") || t.closest?.("input, textarea, select, [contenteditable]")) return;
  ev.preventDefault();
  scrubTo(cur, r.pos + (ev.key === "ArrowLeft" ? -1 : 1) * (ev.shiftKey ? 10 : 1));
}

function applyTheme(theme) {
  if (theme) document.documentElement.dataset.theme = theme;
  else delete document.documentElement.dataset.theme;
}

// ---------------------------------------------------------------- sign-in links
// `/#token=X` (what `scanstream dev` prints) signs this browser in. It never replaces a token
// already stored here without asking, showing whose account the link is for: otherwise a link
// from someone else would silently sign you into their account, and what you then do there
// (scans, params) is theirs to read.

function takeLinkToken() { // the link's token, taken out of the address bar at once
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (!m) return null;
  history.replaceState(null, "", location.pathname + location.search);
  try { return decodeURIComponent(m[1]).trim() || null; } catch { return null; }
}

async function tokenRefusal(tok) { // null if the server takes the token, else why not
  try {
    const response = await fetch("/v1/strategies", { headers: { Authorization: `Bearer ${tok}` } });
    if (response.ok) return null;
    const body = await response.json().catch(() => null);
    return body?.detail || `HTTP ${response.status}`;
  } catch {
    return "the server cannot be reached";
  }
}

function askSwitch(linked) { // resolves true when the user chooses the link's account
  const now = userOf(token) || "?", next = userOf(linked) || "?", { exp } = claimsOf(linked);
  closeStream();
  $("app").hidden = true;
  $("token-gate").hidden = true;
  for (const id of ["switch-new", "switch-accept-name"]) $(id).textContent = next;
  for (const id of ["switch-old", "switch-stay-name"]) $(id).textContent = now;
  $("switch-expiry").textContent = exp ? ` (good until ${new Date(exp * 1000).toLocaleString()})` : "";
  $("switch-gate").hidden = false;
  $("switch-stay").focus(); // Enter keeps the account you had
  return new Promise((resolve) => {
    $("switch-stay").onclick = () => resolve(false);
    $("switch-accept").onclick = () => resolve(true);
  });
}

async function offerLinkToken(linked) {
  if (!token || linked === token) { useToken(linked); enter(); return; }
  const refused = await tokenRefusal(linked);
  if (refused) {
    enter();
    toast(`The link's token was not used (${refused}). You are still signed in as ${userOf(token) || "?"}.`, 10000);
    return;
  }
  // Checked: the link's token is good, so the user it names is its user.
  const next = userOf(linked);
  if ((next && next === userOf(token)) || await askSwitch(linked)) useToken(linked);
  enter();
}

function init() {
  applyTheme(localStorage.getItem(THEME_KEY));
  const linked = takeLinkToken();
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = $("token-input").value.trim();
    if (!value) return;
    useToken(value);
    enter();
  });
  $("signout").addEventListener("click", () => {
    localStorage.removeItem(TOKEN_KEY);
    token = "";
    showGate();
  });
  $("theme").addEventListener("click", () => {
    const dark = getComputedStyle(document.documentElement).colorScheme.includes("dark");
    const next = dark ? "light" : "dark";
    localStorage.setItem(THEME_KEY, next);
    applyTheme(next);
  });
  $("start").addEventListener("click", startScan);
  $("cancel").addEventListener("click", cancelScan);
  $("select-all").addEventListener("click", () => {
    for (const i of $("strategy-pick").querySelectorAll("input")) i.checked = true;
  });
  $("select-none").addEventListener("click", () => {
    for (const i of $("strategy-pick").querySelectorAll("input")) i.checked = false;
  });
  $("refresh-scans").addEventListener("click", () => loadScans());
  $("more-scans").addEventListener("click", () => loadScans(true));
  $("home").addEventListener("click", (ev) => {
    ev.preventDefault();
    closeStream();
    state.current = null;
    history.replaceState(null, "", location.pathname);
    $("scan").hidden = true;
    $("empty").hidden = false;
    setConn("idle", "idle");
    markActive();
  });
  $("copy-id").addEventListener("click", async () => {
    try { await navigator.clipboard.writeText(state.current?.id || ""); toast("Copied."); }
    catch { toast("Copying is not allowed here."); }
  });
  $("opp-filter").addEventListener("input", (ev) => { state.filter = ev.target.value; scheduleRender(); });
  $("log-panel").addEventListener("toggle", () => render());
  const step = (d) => () => { const r = state.current?.replay; if (r) scrubTo(state.current, r.pos + d); };
  $("replay-first").addEventListener("click", () => scrubTo(state.current, 1));
  $("replay-prev").addEventListener("click", step(-1));
  $("replay-next").addEventListener("click", step(1));
  $("replay-last").addEventListener("click", () => scrubTo(state.current, Infinity));
  $("replay-range").addEventListener("input", (ev) => scrubTo(state.current, ev.target.value));
  $("timeline").addEventListener("click", onTimelineClick);
  document.addEventListener("keydown", onReplayKey);
  for (const th of $("opps").tHead.rows[0].cells) {
    th.addEventListener("click", () => {
      const key = th.dataset.key;
      if (!key) return;
      const numeric = key === "score" || key === "expected_return";
      state.sort = state.sort.key === key ? { key, dir: -state.sort.dir } : { key, dir: numeric ? -1 : 1 };
      render();
    });
  }
  window.addEventListener("hashchange", () => {
    const again = takeLinkToken(); // a sign-in link opened in this very tab
    if (again) { offerLinkToken(again); return; }
    const s = /#scan=(scan_[0-9a-f]{32})/.exec(location.hash);
    if (s && s[1] !== state.current?.id && token) openScan(s[1], { push: false });
  });
  if (linked) offerLinkToken(linked);
  else if (token) enter();
  else showGate();
}

document.addEventListener("DOMContentLoaded", init);
