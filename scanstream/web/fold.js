// scanstream dashboard: the scan projection, folded in the browser.
//
// A port of scanstream/projection.py (and the status/results shapes of render.py), rule for
// rule, so the page can show what the server would say after any prefix of a scan's log:
// - an `event_id` seen before changes nothing (re-delivered writes);
// - an opportunity id seen before is not counted again (re-runs after a crash);
// - an event from an attempt older than the strategy's latest changes nothing;
// - a terminal strategy stays terminal; nothing after the scan's terminal event counts.
//
// Events are the objects of GET /v1/scans/{id}/log and of the SSE stream: the entry's data
// fields plus "id" (the stream entry id), "type" and "scan_id"; an entry the server could not
// read comes with a "problem" instead. `apply` mutates a view; `fold` and `foldAll` never
// touch their input. Besides the projection, each strategy keeps its `runs` (one per attempt:
// start, end, result) for drawing the timeline; that changes nothing the server shows.
"use strict";

const ScanFold = (() => {
  const TERMINAL_TYPES = new Set(["scan.completed", "scan.failed", "scan.cancelled"]);
  const TERMINAL_SCAN = new Set(["completed", "failed", "cancelled"]);
  const TERMINAL_STRATEGY = new Set(["completed", "failed", "cancelled"]);
  const STRATEGY_TYPES = new Set(["strategy.started", "strategy.progress", "opportunity.found",
    "strategy.completed", "strategy.failed"]);
  const MAX_WARNINGS_KEPT = 20;

  function empty(scanId) {
    return {
      scan_id: scanId, user_id: null, state: "queued", created_at: null, updated_at: null,
      finished_at: null, params: {}, strategies: new Map(), opportunities: new Map(),
      cancel_requested: false, end_reason: null, last_event_id: null,
      events_folded: 0, seen: new Set(), warnings: [], warnings_count: 0,
      events: 0, // entries read, folded or not (the server keeps no such count)
    };
  }

  function newStrategy(name) {
    return { name, state: "pending", attempts: 0, progress: 0, opportunities: 0, error: null,
             started_at: null, finished_at: null, message: "", runs: [] };
  }

  function copy(view) {
    // Opportunities and errors are never mutated, so they can be shared.
    const strategies = new Map();
    for (const [k, s] of view.strategies) strategies.set(k, { ...s, runs: s.runs.map((r) => ({ ...r })) });
    return { ...view, params: { ...view.params }, strategies,
             opportunities: new Map(view.opportunities), seen: new Set(view.seen),
             warnings: view.warnings.slice() };
  }

  // Python's repr() of a str, for the one warning that quotes a strategy name.
  function pyRepr(s) {
    const quote = s.includes("'") && !s.includes('"') ? '"' : "'";
    let out = quote;
    for (const ch of s) {
      const c = ch.codePointAt(0);
      if (ch === "\\" || ch === quote) out += "\\" + ch;
      else if (ch === "\n") out += "\\n";
      else if (ch === "\r") out += "\\r";
      else if (ch === "\t") out += "\\t";
      else if (c < 0x20 || (c >= 0x7f && c <= 0xa0) || c === 0xad) out += "\\x" + c.toString(16).padStart(2, "0");
      else out += ch;
    }
    return out + quote;
  }

  function warn(view, e, problem) {
    view.warnings_count += 1;
    if (view.warnings.length < MAX_WARNINGS_KEPT) view.warnings.push({ entry_id: e.id, problem });
  }

  function exists(view) { return view.user_id !== null; }
  function terminal(view) { return TERMINAL_SCAN.has(view.state); }

  function closeRun(s, ts, result) {
    const run = s.runs[s.runs.length - 1];
    if (run && run.end === null) { run.end = ts; run.result = result; }
  }

  // projection._apply
  function apply(view, e) {
    view.events += 1;
    view.last_event_id = e.id;
    if (e.problem !== undefined) { warn(view, e, e.problem || "unreadable entry"); return view; }
    if (view.seen.has(e.event_id)) return view;
    view.seen.add(e.event_id);
    if (terminal(view)) { warn(view, e, `${e.type} after the scan ended`); return view; }
    if (e.type !== "scan.requested" && !exists(view)) {
      warn(view, e, `${e.type} before scan.requested`);
      return view;
    }
    view.events_folded += 1;
    if (e.type === "scan.requested") {
      if (exists(view)) { warn(view, e, "a second scan.requested"); return view; }
      view.user_id = e.user_id;
      view.params = { ...(e.params || {}) };
      view.created_at = e.ts;
      view.strategies = new Map(e.strategies.map((n) => [n, newStrategy(n)]));
    } else if (STRATEGY_TYPES.has(e.type)) {
      applyStrategy(view, e);
    } else if (e.type === "scan.cancel_requested") {
      view.cancel_requested = true;
    } else if (TERMINAL_TYPES.has(e.type)) {
      end(view, e);
    }
    view.updated_at = e.ts;
    return view;
  }

  // projection._strategy_of and the strategy events' handlers (_started, _progress, ...)
  function applyStrategy(view, e) {
    const s = view.strategies.get(e.strategy);
    if (!s) { warn(view, e, `strategy ${pyRepr(String(e.strategy))} is not part of this scan`); return; }
    if (TERMINAL_STRATEGY.has(s.state) || e.attempt < s.attempts) return; // never regresses
    switch (e.type) {
      case "strategy.started":
        if (e.attempt === s.attempts && s.state === "running") return;
        closeRun(s, e.ts, "failed"); // a retry supersedes an attempt nobody closed
        s.attempts = e.attempt;
        s.state = "running";
        s.progress = 0;
        s.started_at = s.started_at || e.ts;
        s.runs.push({ attempt: e.attempt, start: e.ts, end: null, result: "running" });
        if (view.state === "queued") view.state = "running";
        break;
      case "strategy.progress":
        if (e.attempt === s.attempts) { s.progress = e.progress; s.message = e.message ?? ""; }
        break;
      case "opportunity.found": {
        const o = e.opportunity;
        if (!view.opportunities.has(o.id)) {
          view.opportunities.set(o.id, o);
          s.opportunities += 1;
        }
        break;
      }
      case "strategy.completed":
        s.attempts = e.attempt;
        s.state = "completed";
        s.error = null; // an earlier attempt's failure no longer describes it
        s.progress = 1;
        s.finished_at = e.ts;
        closeRun(s, e.ts, "completed");
        break;
      case "strategy.failed":
        s.attempts = e.attempt;
        s.error = e.error;
        closeRun(s, e.ts, "failed");
        if (e.final) { s.state = "failed"; s.finished_at = e.ts; }
        else s.state = "pending"; // a retry follows
        break;
    }
  }

  // projection._end
  function end(view, e) {
    view.state = e.type.slice("scan.".length);
    view.finished_at = e.ts;
    view.end_reason = e.reason ?? null;
    for (const s of view.strategies.values()) {
      if (!TERMINAL_STRATEGY.has(s.state)) {
        s.state = "cancelled";
        s.finished_at = e.ts;
        closeRun(s, e.ts, "cancelled");
      }
    }
  }

  function fold(view, events) {
    const out = copy(view);
    for (const e of events) apply(out, e);
    return out;
  }

  function foldAll(scanId, events) { return fold(empty(scanId), events); }

  // Python's round(x, 4): the nearest of the exact binary value, ties to even.
  function round4(x) {
    if (!Number.isFinite(x)) return x;
    const exact = Math.abs(x).toFixed(30);
    const dot = exact.indexOf(".");
    if (/^50*$/.test(exact.slice(dot + 5))) { // exactly halfway: keep the even neighbour
      const down = Number(exact.slice(0, dot + 5));
      const last = Number(exact[dot + 4]);
      const r = last % 2 === 0 ? down : Number((down + 0.0001).toFixed(4));
      return x < 0 ? -r : r;
    }
    return Number(x.toFixed(4));
  }

  function progress(view) {
    if (terminal(view)) return 1;
    if (!view.strategies.size) return 0;
    let done = 0; // summed in the same order as Python's sum()
    for (const s of view.strategies.values()) done += TERMINAL_STRATEGY.has(s.state) ? 1 : s.progress;
    return round4(done / view.strategies.size);
  }

  function countState(view, state) {
    let n = 0;
    for (const s of view.strategies.values()) if (s.state === state) n += 1;
    return n;
  }

  // Python compares str by code point; JavaScript's < compares UTF-16 code units.
  function cmpCodePoints(a, b) {
    if (a === b) return 0;
    const surrogate = /[\ud800-\udfff]/;
    if (!surrogate.test(a) && !surrogate.test(b)) return a < b ? -1 : 1;
    const x = Array.from(a, (c) => c.codePointAt(0)), y = Array.from(b, (c) => c.codePointAt(0));
    for (let i = 0; i < Math.min(x.length, y.length); i += 1) if (x[i] !== y[i]) return x[i] - y[i];
    return x.length - y.length;
  }

  // ScanView.ranked_opportunities: best score first, ties broken by id.
  function ranked(view) {
    return [...view.opportunities.values()].sort((a, b) => b.score - a.score || cmpCodePoints(a.id, b.id));
  }

  function errorOut(err) { return err ? { type: err.type, message: err.message } : null; }

  function opportunityOut(o) {
    return { id: o.id, strategy: o.strategy, symbol: o.symbol, side: o.side, score: o.score,
             expected_return: o.expected_return, details: o.details ?? {} };
  }

  // render.status_of: the JSON of GET /v1/scans/{id}.
  function status(view) {
    return {
      scan_id: view.scan_id, user_id: view.user_id ?? "", state: view.state,
      created_at: view.created_at, updated_at: view.updated_at, finished_at: view.finished_at,
      strategies_total: view.strategies.size,
      strategies_completed: countState(view, "completed"),
      strategies_failed: countState(view, "failed"),
      opportunities_found: view.opportunities.size,
      progress: progress(view),
      last_event_id: view.last_event_id,
      strategies: [...view.strategies.values()].map((s) => ({
        name: s.name, state: s.state, attempts: s.attempts, progress: round4(s.progress),
        opportunities: s.opportunities, error: errorOut(s.error),
        started_at: s.started_at, finished_at: s.finished_at })),
      end_reason: view.end_reason,
      warnings_count: view.warnings_count,
      warnings: view.warnings.map((w) => ({ entry_id: w.entry_id, problem: w.problem })),
    };
  }

  // render.results_of: the JSON of GET /v1/scans/{id}/results.
  function results(view) {
    return { scan_id: view.scan_id, state: view.state, complete: terminal(view),
             opportunities: ranked(view).map(opportunityOut), last_event_id: view.last_event_id };
  }

  return { TERMINAL_TYPES, TERMINAL_SCAN, TERMINAL_STRATEGY, MAX_WARNINGS_KEPT, empty, copy,
           apply, fold, foldAll, progress, round4, countState, cmpCodePoints, ranked, status,
           results, terminal };
})();

if (typeof window !== "undefined") window.ScanFold = ScanFold;
if (typeof module !== "undefined" && module.exports) module.exports = ScanFold;
