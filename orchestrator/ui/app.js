// The steerbench web UI: sweeps with live progress, per-condition summaries, runs with
// filters, and a run's trajectory with the critic's interventions where they happened.
// Plain JavaScript served by the coordinator; it talks to the same API as `steer`, with the
// token kept in this browser's localStorage (or given once as &token=... after the page's
// address, e.g. #/&token=...).
"use strict";

const main = document.getElementById("main");
let stream = null; // the live progress stream of the page shown, if any

// A token given in the address (`#/run/5&token=...`) is kept and taken out of the address.
function token() {
  const m = location.hash.match(/&token=([^&]+)/);
  if (m) {
    localStorage.setItem("steer-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.hash.replace(/&token=[^&]+/, ""));
  }
  return localStorage.getItem("steer-token");
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children.flat()) e.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return e;
}

async function api(path) {
  const r = await fetch("/api/v1" + path, { headers: { Authorization: "Bearer " + token() } });
  if (r.status === 401) { askToken("the token was refused"); throw new Error("unauthorized"); }
  const body = await r.json();
  if (!r.ok) throw new Error(body.message || r.statusText);
  return body;
}

function askToken(why) {
  main.replaceChildren(el("h2", {}, "Sign in"), el("p", {}, why || "Paste a user or admin token (steer token create, or the admin token steer up printed)."));
  const input = el("input", { type: "password", size: "70", id: "token" });
  const go = el("button", {}, "Use this token");
  go.onclick = () => { localStorage.setItem("steer-token", input.value.trim()); route(); };
  main.append(input, go);
}

const pct = (x) => (x == null ? "-" : (100 * x).toFixed(1) + "%");
const usd = (x) => (x == null ? "-" : "$" + Number(x).toFixed(4));

function progress(s) {
  const done = s.total_runs - (s.states.queued + s.states.running + s.states.paused);
  const w = s.total_runs ? Math.round((160 * done) / s.total_runs) : 0;
  return el("span", {}, el("span", { class: "bar" }, el("span", { style: `width:${w}px` })), ` ${done}/${s.total_runs}`);
}

async function sweepsPage() {
  const sweeps = await api("/sweeps");
  const rows = sweeps.map((s) => el("tr", {},
    el("td", {}, el("a", { href: `#/sweep/${s.id}` }, s.name)), el("td", {}, s.state),
    el("td", {}, progress(s)), el("td", { class: "num" }, "$" + s.spent_usd),
    el("td", {}, Object.entries(s.outcomes).map(([k, v]) => `${k} ${v}`).join(", "))));
  main.replaceChildren(el("h2", {}, "Sweeps"),
    el("table", { id: "sweeps" }, el("tr", {}, ["sweep", "state", "progress", "spent", "outcomes"].map((h) => el("th", {}, h))), rows));
}

// Live status of one sweep: the coordinator's server-sent events, read with fetch so that the
// token travels in a header (EventSource cannot send one).
async function follow(id, onStatus) {
  const ctrl = new AbortController();
  stream = ctrl;
  const r = await fetch(`/api/v1/sweeps/${id}/events`, { headers: { Authorization: "Bearer " + token() }, signal: ctrl.signal });
  const reader = r.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).join("\n");
      if (data) onStatus(JSON.parse(data));
    }
  }
}

async function sweepPage(id, query) {
  const [status, report] = await Promise.all([api(`/sweeps/${id}`), api(`/report?sweeps=${id}`)]);
  const head = el("p", { id: "status" });
  // An endpoint resting after outages is why queued runs may not be starting: say so.
  const resting = (s) => (s.resting_endpoints || []).map((e) => el("span", { class: "resting" },
    e.resting_s > 0 ? ` — endpoint ${e.endpoint} resting ${Math.ceil(e.resting_s)} s more after ${e.outages} outage(s)`
      : ` — endpoint ${e.endpoint} half-open after ${e.outages} outage(s)`));
  // Queued runs no live worker can take (a key variable none allows, ...): say why.
  const waiting = (s) => (s.waiting || []).map((w) => el("span", { class: "waiting" },
    ` — ${w.runs} queued run(s) waiting: ${w.reason}`));
  // Why runs failed or were cancelled, grouped as `steer sweep status` groups them.
  const reasons = el("ul", { id: "reasons" });
  const showReasons = (s) => reasons.replaceChildren(...(s.reasons || []).map((g) => el("li", {},
    `${g.runs} ${g.state}: ${g.reason} (e.g. `, el("a", { href: `#/run/${g.example_run}` }, `run ${g.example_run}`), ")")));
  const show = (s) => {
    head.replaceChildren(`${s.name}: ${s.state} `, progress(s), ` — spent $${s.spent_usd}`, resting(s), waiting(s));
    showReasons(s);
  };
  show(status);
  if (status.state === "running" || status.state === "paused") follow(id, show).catch(() => {});
  const cond = report.conditions.map((c) => el("tr", {},
    el("td", {}, c.label), el("td", { class: "num" }, `${c.resolved}/${c.denominator}`), el("td", { class: "num" }, pct(c.resolve_rate)),
    el("td", {}, c.wilson ? `${pct(c.wilson.lo)}–${pct(c.wilson.hi)}` : "-"),
    el("td", { class: "num" }, `${c.resolved}/${c.runs_finished}`), el("td", { class: "num" }, pct(c.resolve_rate_finished)), el("td", { class: "num" }, usd(c.cost_mean_usd)),
    el("td", { class: "num" }, c.steps_mean == null ? "-" : c.steps_mean.toFixed(1)), el("td", { class: "num" }, String(c.interventions)),
    el("td", {}, Object.entries(c.outcomes).map(([k, v]) => `${k} ${v}`).join(", "))));
  const params = new URLSearchParams(query);
  const filters = el("p", { class: "filters" });
  const select = (name, values) => {
    const s = el("select", { name }, el("option", { value: "" }, "any " + name), values.map((v) => el("option", { value: v }, v)));
    s.value = params.get(name) || "";
    s.onchange = () => { if (s.value) params.set(name, s.value); else params.delete(name); location.hash = `#/sweep/${id}?${params}`; };
    return el("label", {}, s);
  };
  const outcomes = [...new Set(report.conditions.flatMap((c) => Object.keys(c.outcomes)))];
  filters.append(select("outcome", outcomes), select("agent", [...new Set(report.conditions.map((c) => c.agent))]),
    select("critic", [...new Set(report.conditions.map((c) => c.critic))]));
  const repo = params.get("repo");
  const runs = (await api(`/sweeps/${id}/runs?${params}`)).filter((r) => !repo || r.instance_id.startsWith(repo));
  const runRows = runs.map((r) => el("tr", {},
    el("td", {}, el("a", { href: `#/run/${r.id}` }, String(r.id))), el("td", {}, r.instance_id), el("td", {}, `${r.agent}/${r.critic}`),
    el("td", {}, r.state), el("td", {}, r.outcome || "-"), el("td", {}, r.resolved == null ? "-" : r.resolved ? "yes" : "no"),
    el("td", { class: "num" }, String(r.totals.steps)), el("td", { class: "num" }, usd(Number(r.totals.agent_cost_usd) + Number(r.totals.critic_cost_usd)))));
  // The HTML report needs the token, which a plain link cannot carry: fetched, then shown.
  const reportLink = el("a", { href: "#", id: "html-report" }, "HTML report");
  reportLink.onclick = async (e) => {
    e.preventDefault();
    const r = await fetch(`/api/v1/report/html?sweeps=${id}`, { headers: { authorization: `Bearer ${token()}` } });
    if (!r.ok) { reportLink.textContent = `HTML report: ${r.status}`; return; }
    window.open(URL.createObjectURL(new Blob([await r.text()], { type: "text/html" })), "_blank");
  };
  main.replaceChildren(el("h2", {}, `Sweep ${status.name}`), head, el("p", {}, reportLink),
    el("h3", {}, "Why runs failed"), reasons,
    el("h3", {}, "Conditions"),
    el("table", { id: "conditions" }, el("tr", {}, ["condition", "resolved / selected", "rate", "95% Wilson", "resolved / finished", "rate (finished)", "cost / finished run", "steps", "interventions", "outcomes"].map((h) => el("th", {}, h))), cond),
    el("h3", {}, "Runs"), filters,
    el("table", { id: "runs" }, el("tr", {}, ["run", "instance", "condition", "state", "outcome", "resolved", "steps", "cost"].map((h) => el("th", {}, h))), runRows));
}

function message(m) {
  const sup = m.supervisor === true || (m.extra || {}).supervisor === true;
  const text = typeof m.content === "string" ? m.content : JSON.stringify(m.content ?? m.tool_calls ?? "", null, 1);
  const calls = m.tool_calls ? "\n" + m.tool_calls.map((c) => `→ ${c.function?.name}(${c.function?.arguments})`).join("\n") : "";
  return el("div", { class: `msg ${m.role}${sup ? " supervisor" : ""}` },
    el("b", {}, m.role), sup ? el("span", { class: "tag supervisor" }, "critic") : "", "\n", text + calls);
}

async function runPage(id) {
  const rec = await api(`/runs/${id}/record`);
  const run = rec.run;
  const interventions = rec.critic_calls.filter((c) => c.decision !== "continue");
  const steps = rec.steps.map((s) => el("div", { class: "step", id: `step-${s.attempt}-${s.index}` },
    el("b", {}, `attempt ${s.attempt}, step ${s.index + 1}`), s.replayed ? el("span", { class: "tag replayed" }, "replayed") : "",
    el("span", { class: "tag" }, `${s.llm_ms} ms model, ${s.command_ms} ms command, $${s.cost_usd}`),
    (Array.isArray(s.messages) ? s.messages : []).map(message)));
  const tests = rec.evaluation ? Object.entries(rec.evaluation.tests || {}).map(([t, st]) => el("tr", {}, el("td", {}, t), el("td", {}, st))) : [];
  main.replaceChildren(
    el("h2", {}, `Run ${run.id}: ${run.instance_id}`),
    el("p", {}, `${run.agent}/${run.critic}, attempt ${run.attempt}, ${run.state}, outcome ${run.outcome || "-"}, resolved ${run.resolved == null ? "-" : run.resolved}, ${run.totals.steps} steps, agent $${run.totals.agent_cost_usd}, critic $${run.totals.critic_cost_usd}`),
    el("p", {}, `${rec.critic_calls.length} critic calls, ${interventions.length} interventions`),
    run.last_error ? el("p", { id: "last-error" }, el("b", {}, "Last error: "), el("pre", {}, run.last_error)) : "",
    el("h3", {}, "Attempts"),
    el("table", { id: "attempts" }, el("tr", {}, ["attempt", "worker", "claimed", "ended", "how it ended", "reason"].map((h) => el("th", {}, h))),
      (rec.attempts || []).map((a) => el("tr", {}, el("td", {}, String(a.attempt)), el("td", {}, a.worker_id || "-"),
        el("td", {}, a.claimed_at), el("td", {}, a.ended_at || "-"), el("td", {}, a.ending || "held"), el("td", {}, a.reason || "")))),
    el("h3", {}, "Trajectory"), el("div", { id: "trajectory" }, steps),
    el("h3", {}, "Patch"), el("pre", { class: "patch" }, rec.patch || "(none)"),
    el("h3", {}, "Tests"), el("table", { id: "tests" }, el("tr", {}, el("th", {}, "test"), el("th", {}, "status")), tests));
}

async function route() {
  if (stream) { stream.abort(); stream = null; }
  if (!token()) return askToken();
  const [path, query] = (location.hash.slice(1) || "/").split("?");
  const parts = path.split("/").filter(Boolean);
  try {
    if (parts[0] === "sweep") await sweepPage(parts[1], query || "");
    else if (parts[0] === "run") await runPage(parts[1]);
    else await sweepsPage();
    document.body.dataset.loaded = location.hash || "#/";
  } catch (e) {
    if (e.message !== "unauthorized") main.replaceChildren(el("p", { class: "err" }, "Error: " + e.message));
  }
}

window.addEventListener("hashchange", route);
route();
