//! The web dashboard: one self-contained page (no assets, no build step) that
//! polls the REST API every second and shows what a person running the job
//! looks at: its state, the job graph with each vertex's busy, backpressured
//! and idle time, throughput and watermark, the checkpoint history, and the
//! TaskManagers with their slots.

pub const PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Weir dashboard</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  :root { --bg:#f6f7f9; --card:#fff; --ink:#1d2430; --muted:#687385; --line:#d9dee6;
          --busy:#e4572e; --bp:#8e44ad; --idle:#2e86de; --ok:#2e9e5b; --bad:#c0392b; }
  * { box-sizing: border-box; }
  body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; background:var(--bg); color:var(--ink); }
  header { display:flex; gap:24px; align-items:baseline; padding:14px 24px; background:#1d2430; color:#fff; }
  header h1 { font-size:18px; margin:0; font-weight:600; }
  header .state { padding:2px 10px; border-radius:10px; background:#3b4658; font-weight:600; }
  header .state.running { background:var(--ok); } header .state.failed { background:var(--bad); }
  header .state.restarting { background:#d68910; }
  header .facts { color:#c8cfdb; }
  main { padding:18px 24px; display:grid; gap:18px; }
  section { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:14px 16px; }
  section h2 { font-size:15px; margin:0 0 10px; }
  #graph { overflow-x:auto; }
  svg text { font:12px system-ui, sans-serif; fill:var(--ink); }
  svg .name { font-weight:600; }
  svg .edge { stroke:#8a94a6; stroke-width:1.5; fill:none; marker-end:url(#arrow); }
  svg .strategy { fill:var(--muted); font-size:11px; }
  table { border-collapse:collapse; width:100%; }
  th, td { text-align:left; padding:4px 10px 4px 0; border-bottom:1px solid var(--line); white-space:nowrap; }
  th { color:var(--muted); font-weight:500; }
  td.num { font-variant-numeric: tabular-nums; }
  .legend span { display:inline-block; margin-right:14px; color:var(--muted); }
  .legend i { display:inline-block; width:10px; height:10px; margin-right:4px; border-radius:2px; }
  .failed { color:var(--bad); } .completed { color:var(--ok); }
  #error { color:var(--bad); }
</style>
</head>
<body>
<header>
  <h1 id="job">Weir</h1><span id="state" class="state">…</span>
  <span class="facts" id="facts"></span>
</header>
<main>
  <div id="error"></div>
  <section>
    <h2>Job graph</h2>
    <div class="legend"><span><i style="background:var(--busy)"></i>busy</span><span><i style="background:var(--bp)"></i>backpressured</span><span><i style="background:var(--idle)"></i>idle</span> (ms per second, max over subtasks)</div>
    <div id="graph"></div>
  </section>
  <section>
    <h2>Vertices</h2>
    <table id="vertices"><thead><tr><th>vertex</th><th>parallelism</th><th>records in/s</th><th>records out/s</th><th>busy</th><th>backpressured</th><th>idle</th><th>watermark</th><th>pending</th></tr></thead><tbody></tbody></table>
  </section>
  <section>
    <h2>Checkpoints</h2>
    <table id="checkpoints"><thead><tr><th>id</th><th>kind</th><th>status</th><th>triggered</th><th>duration</th><th>size</th><th>path / failure</th></tr></thead><tbody></tbody></table>
  </section>
  <section>
    <h2>TaskManagers</h2>
    <table id="taskmanagers"><thead><tr><th>id</th><th>data address</th><th>slots used</th><th>last heartbeat</th></tr></thead><tbody></tbody></table>
  </section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({"&":"&amp;","<":"&lt;",">":"&gt;","\"":"&quot;"}[c]));
const num = (x) => x == null ? "–" : x >= 1e6 ? (x/1e6).toFixed(2)+"M" : x >= 1e3 ? (x/1e3).toFixed(1)+"k" : Math.round(x).toString();
const bytes = (b) => b >= 1<<20 ? (b/(1<<20)).toFixed(1)+" MiB" : b >= 1024 ? (b/1024).toFixed(1)+" KiB" : b+" B";
const time = (ms) => ms <= -9e15 || ms >= 9e15 ? "–" : new Date(ms).toISOString().replace("T"," ").replace("Z","");
let jobName = null;

function drawGraph(job) {
  // One box per chain (the vertices one task runs), as Flink draws its job graph.
  const W = 230, H = 96, GX = 70, GY = 18;
  const chains = [];
  job.vertices.forEach((v) => { (chains[v.chain] = chains[v.chain] || []).push(v); });
  const chainOf = {}; job.vertices.forEach((v) => chainOf[v.id] = v.chain);
  const edges = job.edges.filter((e) => e.ship_strategy !== "chained").map((e) => ({from: chainOf[e.from], to: chainOf[e.to], s: e.ship_strategy}));
  const col = [];
  const depth = (c, seen) => { if (col[c] != null) return col[c]; if (seen.has(c)) return 0; seen.add(c);
    const ins = edges.filter((e) => e.to === c).map((e) => e.from);
    col[c] = ins.length ? Math.max(...ins.map((i) => depth(i, seen))) + 1 : 0; return col[c]; };
  chains.forEach((_, c) => depth(c, new Set()));
  const rows = {}; const pos = [];
  chains.forEach((_, c) => { const k = col[c]; rows[k] = rows[k] || 0; pos[c] = {x: 10 + k*(W+GX), y: 10 + rows[k]*(H+GY)}; rows[k]++; });
  const width = 20 + (Math.max(0, ...col) + 1) * (W+GX);
  const height = 20 + Math.max(1, ...Object.values(rows)) * (H+GY);
  let svg = `<svg width="${width}" height="${height}" role="img" aria-label="job graph"><defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#8a94a6"/></marker></defs>`;
  edges.forEach((e) => { const a = pos[e.from], b = pos[e.to]; if (!a || !b) return;
    const x1 = a.x+W, y1 = a.y+H/2, x2 = b.x, y2 = b.y+H/2;
    svg += `<path class="edge" d="M${x1},${y1} C${x1+GX/2},${y1} ${x2-GX/2},${y2} ${x2},${y2}"/>`;
    svg += `<text class="strategy" x="${(x1+x2)/2-14}" y="${(y1+y2)/2-5}">${esc(e.s)}</text>`; });
  chains.forEach((vs, c) => { const p = pos[c], m = vs[0].metrics;
    const name = vs.map((v) => v.name).join(" → ");
    const bar = (ms, color, i) => `<rect x="${p.x+8}" y="${p.y+60+i*10}" width="${Math.max(0,Math.min(1,ms/1000))*(W-16)}" height="7" fill="${color}" rx="2"/>`;
    svg += `<g class="vertex" data-id="${esc(vs[0].id)}"><title>${esc(name)}</title><rect x="${p.x}" y="${p.y}" width="${W}" height="${H}" rx="6" fill="#fff" stroke="#b5bfcc"/>`
      + `<text class="name" x="${p.x+8}" y="${p.y+18}">${esc(name.length > 32 ? name.slice(0,31)+"…" : name)}</text>`
      + `<text x="${p.x+8}" y="${p.y+35}">×${vs[0].parallelism} · in ${num(m.records_in_per_s)}/s · out ${num(m.records_out_per_s)}/s</text>`
      + `<text x="${p.x+8}" y="${p.y+51}">busy ${Math.round(m.busy_ms_per_s)} · backpressured ${Math.round(m.backpressured_ms_per_s)} · idle ${Math.round(m.idle_ms_per_s)}</text>`
      + bar(m.busy_ms_per_s, "var(--busy)", 0) + bar(m.backpressured_ms_per_s, "var(--bp)", 1) + bar(m.idle_ms_per_s, "var(--idle)", 2) + `</g>`; });
  $("graph").innerHTML = svg + "</svg>";
}

function render(job, cps) {
  $("job").textContent = job.name;
  $("state").textContent = job.state; $("state").className = "state " + job.state;
  const latest = job.checkpoints && job.checkpoints.latest;
  $("facts").textContent = `parallelism ${job.parallelism} (max ${job.max_parallelism}) · started ${time(job.start_time)}`
    + ` · restarts ${job.restarts || 0}` + (latest ? ` · latest checkpoint ${latest.id}` : "") + (job.failure ? ` · ${job.failure}` : "");
  drawGraph(job);
  $("vertices").tBodies[0].innerHTML = job.vertices.map((v) => { const m = v.metrics;
    return `<tr><td>${esc(v.name)}</td><td class="num">${v.parallelism}</td><td class="num">${num(m.records_in_per_s)}</td><td class="num">${num(m.records_out_per_s)}</td>`
      + `<td class="num">${Math.round(m.busy_ms_per_s)}</td><td class="num">${Math.round(m.backpressured_ms_per_s)}</td><td class="num">${Math.round(m.idle_ms_per_s)}</td>`
      + `<td class="num">${time(m.current_watermark)}</td><td class="num">${num(m.pending_records)}</td></tr>`; }).join("");
  $("checkpoints").tBodies[0].innerHTML = (cps.history || []).slice(-20).reverse().map((c) =>
    `<tr><td class="num">${c.id}</td><td>${c.kind}</td><td class="${c.status}">${c.status}</td><td>${time(c.triggered_at)}</td>`
    + `<td class="num">${c.duration_ms} ms</td><td class="num">${bytes(c.size_bytes)}${c.checkpointed_bytes < c.size_bytes ? ` (${bytes(c.checkpointed_bytes)} stored)` : ""}</td><td>${esc(c.failure || c.path)}</td></tr>`).join("")
    || `<tr><td colspan="7">none yet</td></tr>`;
  $("taskmanagers").tBodies[0].innerHTML = (job.taskmanagers || []).map((t) =>
    `<tr><td>${esc(t.id)}</td><td>${esc(t.data_address)}</td><td class="num">${t.slots_used} / ${t.slots}</td><td class="num">${t.last_heartbeat_ms_ago} ms ago</td></tr>`).join("")
    || `<tr><td colspan="4">none: the job runs inside this process</td></tr>`;
}

async function refresh() {
  try {
    if (!jobName) { const jobs = await (await fetch("/v1/jobs")).json(); jobName = jobs.jobs[0].id; }
    const [job, cps] = await Promise.all([fetch(`/v1/jobs/${encodeURIComponent(jobName)}`), fetch(`/v1/jobs/${encodeURIComponent(jobName)}/checkpoints`)]);
    if (!job.ok) throw new Error((await job.json()).error || job.statusText);
    render(await job.json(), cps.ok ? await cps.json() : {});
    $("error").textContent = "";
  } catch (e) { $("error").textContent = "cannot reach the JobManager: " + e.message; }
}
refresh(); setInterval(refresh, 1000);
</script>
</body>
</html>
"##;
