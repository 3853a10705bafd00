// tunesmith ui: the interactive parts (charts, the playground's streaming, review shortcuts). No build step.
"use strict";
const csrf = () => document.body.dataset.csrf;
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];

// Loss curves: one or several runs overlaid, training and validation; uPlot zooms on drag.
async function lossChart(el) {
  const ids = el.dataset.runs.split(",").filter(Boolean);
  const fetchAll = () => Promise.all(ids.map(id => fetch(`/api/runs/${id}/metrics`).then(r => r.json())));
  const build = (all) => {
    const steps = [...new Set(all.flatMap(d => d.step))].sort((a, b) => a - b);
    const data = [steps];
    const series = [{label: "step"}];
    all.forEach((d, i) => {
      const at = new Map(d.step.map((s, j) => [s, j]));
      const pick = key => steps.map(s => at.has(s) ? d[key][at.get(s)] : null);
      const name = ids.length > 1 ? ids[i] + " " : "";
      data.push(pick("train_loss"), pick("val_loss"));
      series.push({label: name + "training loss", stroke: COLORS[(2 * i) % COLORS.length], spanGaps: true},
                  {label: name + "validation loss", stroke: COLORS[(2 * i + 1) % COLORS.length], spanGaps: true,
                   points: {show: true, size: 6}, dash: [6, 3]});
    });
    return {data, series};
  };
  let all = await fetchAll();
  let {data, series} = build(all);
  const opts = {width: Math.min(el.clientWidth || 900, 1100), height: 320, series,
                axes: [{label: "optimiser step"}, {label: "loss"}], scales: {x: {time: false}}, cursor: {drag: {x: true, y: false}}};
  const plot = new uPlot(opts, data, el);
  el.dataset.points = String(data[0].length);
  if (el.dataset.live === "yes") {
    const timer = setInterval(async () => {
      all = await fetchAll();
      const next = build(all);
      plot.setData(next.data);
      el.dataset.points = String(next.data[0].length);
      if (all.every(d => d.status !== "running")) clearInterval(timer);
    }, 2000);
  }
}

// Playground: both panes answer the same message, streamed through the UI server.
function playground() {
  const form = document.getElementById("chat-form");
  if (!form) return;
  form.addEventListener("submit", ev => {
    ev.preventDefault();
    const text = document.getElementById("message").value;
    document.querySelectorAll(".pane").forEach(pane => ask(pane, text));
  });
  document.querySelectorAll(".pane").forEach(pane => {
    const fb = pane.querySelector(".feedback");
    const send = body => fetch("/api/feedback", {method: "POST", headers: {"Content-Type": "application/json", "X-CSRF": csrf()},
                                                  body: JSON.stringify({response_id: pane.dataset.responseId, ...body})})
      .then(r => { fb.querySelector(".feedback-status").textContent = r.ok ? "saved" : "not saved (" + r.status + ")"; });
    fb.querySelector(".up").onclick = () => send({rating: "up"});
    fb.querySelector(".down").onclick = () => send({rating: "down"});
    fb.querySelector(".send-correction").onclick = () => send({rating: "down", correction: fb.querySelector(".correction").value});
  });
}

async function ask(pane, text) {
  const out = pane.querySelector(".answer");
  const fb = pane.querySelector(".feedback");
  out.textContent = "";
  fb.hidden = true;
  pane.dataset.done = "no";
  const r = await fetch("/api/chat", {method: "POST", headers: {"Content-Type": "application/json", "X-CSRF": csrf()},
    body: JSON.stringify({model: pane.querySelector(".model").value, messages: [{role: "user", content: text}]})});
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const line = buffer.slice(0, cut).replace(/^data: /, "");
      buffer = buffer.slice(cut + 2);
      if (line === "[DONE]") continue;
      const event = JSON.parse(line);
      if (event.error) { out.textContent = "error: " + event.error.message; continue; }
      pane.dataset.responseId = event.id;
      const delta = event.choices && event.choices[0] && event.choices[0].delta;
      if (delta && delta.content) out.textContent += delta.content;
    }
  }
  fb.hidden = false;
  pane.dataset.done = "yes";
}

// Blind A/B: a, b or t picks the better answer and saves (outside the text fields).
document.addEventListener("keydown", ev => {
  const form = document.getElementById("ab-item");
  if (!form || ["TEXTAREA", "INPUT", "SELECT"].includes(ev.target.tagName)) return;
  const pick = {a: "pref-A", b: "pref-B", t: "pref-tie"}[ev.key];
  if (pick) { ev.preventDefault(); document.getElementById(pick).checked = true; form.requestSubmit(); }
});

// Review: a approves, r rejects the row that has the focus.
document.addEventListener("keydown", ev => {
  const row = ev.target.closest && ev.target.closest(".review-row");
  if (!row || ev.target.tagName === "TEXTAREA" || ev.target.tagName === "INPUT") return;
  const which = {a: ".approve", r: ".reject"}[ev.key];
  if (which) { ev.preventDefault(); row.querySelector(which).click(); }
});

// Monitoring over time: one point per window of the report.
function monitorChart(el) {
  let w = JSON.parse(el.dataset.windows || "[]");
  if (!w.length) return;
  const points = w.length;
  if (points === 1) {  // one window: empty neighbours a day apart, so the time axis has a span to show
    const t = Date.parse(w[0].start);
    w = [{start: new Date(t - 86400000).toISOString()}, w[0], {start: new Date(t + 86400000).toISOString()}];
  }
  const x = w.map(p => Date.parse(p.start) / 1000);
  const pick = (key, i) => w.map(p => p[key] ? p[key][i] : null);  // null: no value in that window
  const data = [x, pick("estimated_accuracy", 0), pick("estimated_accuracy", 1), pick("estimated_accuracy", 2),
                pick("positive_feedback", 0), w.map(p => p.length_psi ?? null)];
  const series = [{label: "window"},
    {label: "estimated accuracy", stroke: "#2ca02c", width: 2, points: {show: true}},
    {label: "low", stroke: "#2ca02c", dash: [4, 4]}, {label: "high", stroke: "#2ca02c", dash: [4, 4]},
    {label: "positive feedback", stroke: "#ff7f0e", points: {show: true}},
    {label: "prompt length PSI", stroke: "#9467bd", scale: "psi", points: {show: true}}];
  new uPlot({width: Math.min(el.clientWidth || 900, 1100), height: 300, series,
             scales: {y: {range: [0, 1.05]}, psi: {auto: true}},
             axes: [{}, {label: "share"}, {side: 1, scale: "psi", label: "PSI", grid: {show: false}}],
             cursor: {drag: {x: true, y: false}}}, data, el);
  el.dataset.points = String(points);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("#loss-chart").forEach(lossChart);
  document.querySelectorAll("#monitor-chart").forEach(monitorChart);
  playground();
});
