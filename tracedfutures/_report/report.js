// The page of `tracedfutures report`: draws the data that tracedfutures/_cli/report_data.py aggregated (embedded
// as JSON in #report-data) with uPlot, inlined above. Times are seconds from the start of the trace.
(function () {
  "use strict";
  const started = performance.now();
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
    "#7f7f7f", "#aec7e8", "#ffbb78", "#98df8a", "#c5b0d5", "#c49c94"];
  const ERROR_COLOR = "#d62728", CANCELLED_COLOR = "#c7c7c7", BLOCKED_COLOR = "#9a9a9a", MIXED_COLOR = "#6b6b6b";
  const OUTCOME = { SUCCESS: 0, ERROR: 1, CANCELLED: 2, BLOCKED: 3, SPAN: 4 };
  const timeCharts = [];

  // -- formatting ---------------------------------------------------------------------------------------------
  function duration(s) {
    if (s === null || s === undefined) return "–";
    const [v, unit] = s >= 1 || s === 0 ? [s, "s"] : s >= 1e-3 ? [s * 1e3, "ms"] : [s * 1e6, "µs"];
    return `${+v.toPrecision(3)} ${unit}`;
  }
  const percent = (x) => `${(x * 100).toFixed(1)} %`;
  const count = (n) => n.toLocaleString("en-US");
  const setText = (id, text) => { document.getElementById(id).textContent = text; };
  const width = (el) => Math.max(300, el.clientWidth);
  const clip = (text, most) => (text.length > most ? `${text.slice(0, most - 1)}…` : text);

  function table(id, columns, rows) {
    const el = document.getElementById(id);
    const head = el.createTHead().insertRow();
    for (const [title] of columns) head.appendChild(document.createElement("th")).textContent = title;
    const body = el.createTBody();
    for (const row of rows) {
      const tr = body.insertRow();
      for (const [, cell, kind] of columns) {
        const td = tr.insertCell();
        const value = cell(row);
        if (kind === "code") td.appendChild(document.createElement("code")).textContent = value;
        else td.textContent = value;
        if (kind === "num") td.className = "num";
      }
    }
    if (!rows.length) body.insertRow().insertCell().textContent = "none";
  }

  // -- x axes that zoom together ------------------------------------------------------------------------------
  let syncing = false;
  function followZoom(u, key) {
    if (key !== "x") return;
    // What the charts show, for a reader of the page (and its tests): "min max" in seconds.
    document.getElementById("timeline").dataset.range = `${u.scales.x.min} ${u.scales.x.max}`;
    if (syncing) return;
    syncing = true;
    for (const other of timeCharts) {
      if (other !== u) other.setScale("x", { min: u.scales.x.min, max: u.scales.x.max });
    }
    syncing = false;
  }

  function wheelZoom(u) {
    const wall = data.summary.wall || 1;
    u.over.addEventListener("wheel", (e) => {
      e.preventDefault();
      const { min, max } = u.scales.x;
      const range = max - min;
      let lo, hi;
      if (e.shiftKey || Math.abs(e.deltaX) > Math.abs(e.deltaY)) {
        const shift = Math.sign(e.deltaX || e.deltaY) * range * 0.1;
        lo = min + shift; hi = max + shift;
      } else {
        const at = u.posToVal(e.offsetX, "x");
        const next = Math.min(wall, Math.max(range * (e.deltaY < 0 ? 0.75 : 1 / 0.75), 1e-6));
        lo = at - (at - min) * next / range; hi = lo + next;
      }
      if (lo < 0) { hi -= lo; lo = 0; }
      if (hi > wall) { lo = Math.max(0, lo - (hi - wall)); hi = wall; }
      u.setScale("x", { min: lo, max: hi });
    }, { passive: false });
    u.over.addEventListener("mousedown", (e) => {
      if (e.button !== 1) return;
      e.preventDefault();
      const x0 = e.clientX, { min, max } = u.scales.x, perPx = (max - min) / u.over.clientWidth;
      const move = (m) => {
        let lo = min - (m.clientX - x0) * perPx;
        lo = Math.min(Math.max(lo, 0), Math.max(0, wall - (max - min)));
        u.setScale("x", { min: lo, max: lo + (max - min) });
      };
      const up = () => { document.removeEventListener("mousemove", move); document.removeEventListener("mouseup", up); };
      document.addEventListener("mousemove", move);
      document.addEventListener("mouseup", up);
    });
  }

  function timeChart(el, options, values) {
    // Every time chart's data spans the whole trace, 0 to its end: the x range is the data's (double-click goes
    // back to it) or the zoom's.
    const u = new uPlot({
      width: width(el),
      cursor: { drag: { x: true, y: false }, sync: { key: "time" } },
      ...options,
      scales: { x: { time: false, range: (u, min, max) => [min, max] }, ...(options.scales || {}) },
      hooks: { ...(options.hooks || {}), setScale: [followZoom] },
    }, values, el);
    wheelZoom(u);
    timeCharts.push(u);
    return u;
  }

  // -- summary ---------------------------------------------------------------------------------------------------
  function summary() {
    const s = data.summary;
    setText("summary-tasks", count(s.tasks));
    setText("summary-errors", count(s.errors));
    setText("summary-cancelled", count(s.cancelled));
    setText("summary-executors", count(s.executors));
    setText("summary-workers", count(s.workers));
    setText("summary-wall", duration(s.wall));
    setText("summary-blocked", duration(s.blocked));
    setText("summary-left-out", count(s.left_out));
    if (!s.left_out) document.getElementById("summary-left-out-box").style.display = "none";
    setText("summary-spans", count(s.spans));
    if (!s.spans) document.getElementById("summary-spans-box").style.display = "none";
    const deaths = document.getElementById("deaths");
    for (const d of data.deaths) {
      const broken = data.outcomes.filter((r) => r.executor === d.executor && r.error_type.endsWith("BrokenProcessPool"))
        .reduce((n, r) => n + r.tasks, 0);
      const how = d.signal ? `killed by ${d.signal}` : `exit code ${d.exit_code}`;
      const running = d.task ? ` while running ${d.task.function} (started at ${duration(d.task.start)})` : "";
      deaths.appendChild(document.createElement("li")).textContent =
        `A worker process of ${d.executor} (pid ${d.pid}) died (${how}) at ${duration(d.at)}${running}: its pool ` +
        `broke, ${count(broken)} ${broken === 1 ? "task" : "tasks"} ended with BrokenProcessPool.`;
    }
    if (!s.complete) {
      setText("cut-short", `The run was cut short: the program was killed or ended abruptly before its timeline ` +
        `was finished. The timeline holds its first ${duration(s.recorded)}: ${count(s.tasks)} tasks.`);
    }
  }

  // -- the per-worker timeline ------------------------------------------------------------------------------------
  function timeline() {
    const tl = data.timeline, n = tl.lane.length, lanes = tl.lanes.length;
    const wall = data.summary.wall || 1;
    const el = document.getElementById("timeline");
    if (tl.merged) {
      setText("timeline-note", `${count(tl.slices)} slices: each worker's slices closer than ` +
        `${duration(tl.resolution)} are drawn merged (${count(n)} bars); zoom shows the merged bars larger.`);
    }
    // Each lane's slices are a run of the columns, sorted by start; reach[i]: the latest end up to slice i in its
    // lane (slices nest), so the first slice visible from a time on is found by bisection.
    const from = new Int32Array(lanes + 1).fill(n);
    const reach = new Float64Array(n);
    for (let i = n - 1; i >= 0; i--) from[tl.lane[i]] = i;
    for (let l = lanes - 1; l >= 0; l--) from[l] = Math.min(from[l], from[l + 1]);
    for (let i = 0; i < n; i++) {
      const end = tl.start[i] + tl.dur[i];
      reach[i] = i > 0 && tl.lane[i - 1] === tl.lane[i] ? Math.max(reach[i - 1], end) : end;
    }
    const firstReaching = (l, t) => {
      let lo = from[l], hi = from[l + 1];
      while (lo < hi) { const mid = (lo + hi) >> 1; if (reach[mid] < t) lo = mid + 1; else hi = mid; }
      return lo;
    };
    const color = (i) => {
      const outcome = tl.outcome[i];
      if (outcome === OUTCOME.ERROR) return ERROR_COLOR;
      if (outcome === OUTCOME.CANCELLED) return CANCELLED_COLOR;
      if (outcome === OUTCOME.BLOCKED) return BLOCKED_COLOR;
      return tl.label[i] < 0 ? MIXED_COLOR : PALETTE[tl.label[i] % PALETTE.length];
    };
    const legend = document.getElementById("timeline-legend");
    const shown = new Set();
    for (let i = 0; i < n && shown.size < PALETTE.length * 2; i++) {
      if (tl.outcome[i] === OUTCOME.BLOCKED || tl.label[i] < 0 || shown.has(tl.label[i])) continue;
      shown.add(tl.label[i]);
      const item = legend.appendChild(document.createElement("span"));
      item.appendChild(document.createElement("span")).className = "swatch";
      item.firstChild.style.background = PALETTE[tl.label[i] % PALETTE.length];
      const span = tl.outcome[i] === OUTCOME.SPAN;
      item.appendChild(document.createTextNode(span ? `${tl.labels[tl.label[i]]} (span)` : tl.labels[tl.label[i]]));
    }
    const laneY = (u, l) => u.valToPos(lanes - 1 - l, "y", true);
    // A span's bar fills its task's bar from a height that its depth sets (deeper: lower) down to the bar's foot.
    const spanTop = (mid, taskH, depth) => mid - taskH / 2 + taskH * (1 - Math.pow(0.55, depth));

    function draw(u) {
      const ctx = u.ctx, { left, top, width, height } = u.bbox;
      const x0 = u.scales.x.min, x1 = u.scales.x.max, laneH = height / lanes;
      const taskH = Math.max(1, laneH * 0.8), blockedH = Math.max(1, laneH * 0.2);
      ctx.save();
      ctx.beginPath();
      ctx.rect(left, top, width, height);
      ctx.clip();
      for (let l = 0; l < lanes; l++) {
        const mid = laneY(u, l), end = from[l + 1];
        // [x0, x1, colour, kind]: runs of slices under a pixel apart drawn as one bar; kind: -1 a blocking call, 0 a
        // task, a span's depth
        let pending = null;
        const flush = () => {
          if (!pending) return;
          const [a, b, c, kind] = pending, w = Math.max(1, b - a);
          ctx.fillStyle = c;
          if (kind < 0) ctx.fillRect(a, mid + taskH / 2 - blockedH, w, blockedH);
          else if (kind === 0) ctx.fillRect(a, mid - taskH / 2, w, taskH);
          else {
            const y = spanTop(mid, taskH, kind), h = mid + taskH / 2 - y;
            ctx.fillRect(a, y, w, h);
            if (w >= 4 && h >= 4) {
              ctx.strokeStyle = "rgba(0, 0, 0, 0.45)";
              ctx.strokeRect(a + 0.5, y + 0.5, w - 1, h - 1);
            }
          }
        };
        for (let i = firstReaching(l, x0); i < end && tl.start[i] <= x1; i++) {
          const a = u.valToPos(tl.start[i], "x", true), b = u.valToPos(tl.start[i] + tl.dur[i], "x", true);
          const c = color(i), kind = tl.outcome[i] === OUTCOME.BLOCKED ? -1 : tl.depth[i];
          if (pending && pending[2] === c && pending[3] === kind && a <= pending[1] + 1) {
            pending[1] = Math.max(pending[1], b);
            continue;
          }
          flush();
          pending = [a, b, c, kind];
        }
        flush();
      }
      ctx.restore();
    }

    const hover = document.getElementById("timeline-hover");
    function describe(u) {
      const { left, top } = u.cursor;
      if (left === undefined || left < 0 || top < 0) return;
      const l = lanes - 1 - Math.round(u.posToVal(top, "y"));
      if (l < 0 || l >= lanes) return;
      const t = u.posToVal(left, "x"), slack = 2 * (u.scales.x.max - u.scales.x.min) / u.over.clientWidth;
      // The innermost slice there: a span before its task (the deeper one first), a task before a blocking call.
      const rank = (i) => (tl.outcome[i] === OUTCOME.BLOCKED ? 0 : 1 + tl.depth[i]);
      let found = -1;
      for (let i = firstReaching(l, t - slack); i < from[l + 1] && tl.start[i] <= t + slack; i++) {
        if (tl.start[i] + tl.dur[i] >= t - slack && (found < 0 || rank(i) > rank(found))) found = i;
      }
      if (found < 0) { hover.textContent = `${tl.lanes[l]} · ${duration(t)}`; return; }
      const label = tl.label[found] < 0 ? "several functions" : tl.labels[tl.label[found]];
      const several = tl.count[found] > 1 ? `${count(tl.count[found])} slices merged, ` : "";
      hover.textContent = `${tl.lanes[l]} · ${label} · ${several}${tl.outcomes[tl.outcome[found]]} · ` +
        `from ${duration(tl.start[found])} for ${duration(tl.dur[found])}`;
    }

    const height = Math.min(640, Math.max(80, lanes * (data.summary.spans ? 34 : 22)));  // room for spans in tasks
    timeChart(el, {
      height: height + 50,
      legend: { show: false },
      scales: { y: { range: [-0.5, lanes - 0.5] } },
      axes: [
        { label: "seconds", values: (u, splits) => splits.map((s) => +s.toPrecision(6)) },
        {
          size: 250,
          splits: () => Array.from({ length: lanes }, (_, i) => i),
          values: (u, splits) => splits.map((s) => clip(tl.lanes[lanes - 1 - s] || "", 36)),
          grid: { show: false },
          font: "11px system-ui",
        },
      ],
      series: [{}, { label: "lanes", scale: "y", points: { show: false }, paths: () => null }],
      hooks: { draw: [draw], setCursor: [describe] },
    }, [[0, wall], [null, null]]);
  }

  // -- queued and running, utilization over time ------------------------------------------------------------------
  // The counters' bins start at their times: one more point, the last bin's value held to the end of the trace.
  const binTimes = [...data.counters.t, data.summary.wall];
  const held = (values) => [...values, values[values.length - 1]];

  function executorColor(name) {
    return PALETTE[Math.max(0, data.executors.indexOf(name)) % PALETTE.length];
  }

  function counters() {
    const c = data.counters;
    const el = document.getElementById("counters");
    if (!c.series.length) { el.textContent = "The timeline has no queued / running counters."; return; }
    timeChart(el, {
      height: 260,
      axes: [{ label: "seconds" }, { label: "tasks" }],
      series: [{ label: "s", value: (u, v) => (v == null ? "–" : duration(v)) },
        ...c.series.map((s) => ({
          label: `${s.executor} ${s.kind}`,
          stroke: executorColor(s.executor),
          dash: s.kind === "queued" ? [6, 4] : undefined,
          width: 1.5,
          paths: uPlot.paths.stepped({ align: 1 }),
          points: { show: false },
        }))],
    }, [binTimes, ...c.series.map((s) => held(s.values))]);
  }

  function utilization() {
    const rows = data.utilization;
    table("utilization-table", [
      ["executor", (r) => r.executor],
      ["tasks", (r) => count(r.tasks), "num"],
      ["workers", (r) => count(r.workers), "num"],
      ["busy", (r) => duration(r.busy), "num"],
      ["utilization", (r) => percent(r.utilization), "num"],
    ], rows);
    const running = data.counters.series.filter((s) => s.kind === "running");
    const el = document.getElementById("utilization-chart");
    const workers = Object.fromEntries(rows.map((r) => [r.executor, r.workers]));
    const shown = running.filter((s) => workers[s.executor] > 0);
    if (!shown.length) return;
    timeChart(el, {
      height: 200,
      scales: { y: { range: [0, 100] } },
      axes: [{ label: "seconds" }, { label: "% of workers busy" }],
      series: [{ label: "s", value: (u, v) => (v == null ? "–" : duration(v)) },
        ...shown.map((s) => ({
          label: s.executor, stroke: executorColor(s.executor), width: 1.5, points: { show: false },
          paths: uPlot.paths.stepped({ align: 1 }), value: (u, v) => (v == null ? "–" : `${v.toFixed(1)} %`),
        }))],
    }, [binTimes, ...shown.map((s) => held(s.values.map((v) => Math.min(100, (100 * v) / workers[s.executor]))))]);
  }

  function cpu() {
    const list = document.getElementById("cpu-verdicts");
    for (const v of data.cpu.verdicts) {
      const item = document.createElement("li");
      item.textContent = v.sentence;
      item.dataset.executor = v.executor;
      list.appendChild(item);
    }
    const el = document.getElementById("cpu-chart");
    if (!data.cpu.series.length) {
      el.textContent = "The timeline holds no CPU readings of the workers (written by an older tracedfutures?).";
      return;
    }
    const running = Object.fromEntries(
      data.counters.series.filter((s) => s.kind === "running").map((s) => [s.executor, s.values]));
    const shown = data.cpu.series.filter((s) => running[s.executor]);
    if (!shown.length) { el.textContent = "The timeline has no running counters to draw them against."; return; }
    const line = (label, executor, dash) => ({
      label, stroke: executorColor(executor), dash, width: 1.5, points: { show: false },
      paths: uPlot.paths.stepped({ align: 1 }), value: (u, v) => (v == null ? "–" : v.toFixed(2)),
    });
    timeChart(el, {
      height: 220,
      axes: [{ label: "seconds" }, { label: "CPUs / busy workers" }],
      series: [{ label: "s", value: (u, v) => (v == null ? "–" : duration(v)) },
        ...shown.flatMap((s) => [line(`${s.executor} CPUs used`, s.executor, undefined),
          line(`${s.executor} busy workers`, s.executor, [6, 4])])],
    }, [binTimes, ...shown.flatMap((s) => [held(s.values), held(running[s.executor])])]);
  }

  // -- distributions ----------------------------------------------------------------------------------------------
  let histograms = [];
  function distributions() {
    const h = data.histograms;
    const group = document.getElementById("distribution-group").value;
    const keys = h.groups[group].slice(0, PALETTE.length);
    for (const u of histograms) u.destroy();
    histograms = [];
    const buckets = h.bounds.length - 1;
    const x = Array.from({ length: buckets + 1 }, (_, i) => i);
    const decade = (b) => Math.abs(Math.log10(b) - Math.round(Math.log10(b))) < 1e-9;
    const bound = (i) => (h.bounds[i] === null ? "+Inf" : duration(h.bounds[i]));
    for (const side of ["queue", "run"]) {
      const el = document.getElementById(`${side}-histogram`);
      const present = keys.filter((k) => h[side][k]);
      histograms.push(new uPlot({
        width: width(el),
        height: 240,
        scales: { x: { time: false, range: [0, buckets] } },
        cursor: { drag: { x: false, y: false } },
        axes: [
          {
            label: side === "queue" ? "queue wait" : "run time",
            splits: () => x.filter((i) => h.bounds[i] === 0 || h.bounds[i] === null || decade(h.bounds[i])),
            values: (u, splits) => splits.map(bound),
          },
          { label: "tasks" },
        ],
        series: [{ label: "bucket", value: (u, v) => (v == null || v >= buckets ? "–" : `${bound(v)} – ${bound(v + 1)}`) },
          ...present.map((k, i) => ({
            label: h.names[k],
            stroke: group === "executor" ? executorColor(h.names[k]) : PALETTE[i % PALETTE.length],
            fill: (group === "executor" ? executorColor(h.names[k]) : PALETTE[i % PALETTE.length]) + "33",
            width: 1.5,
            paths: uPlot.paths.stepped({ align: 1 }),
            points: { show: false },
          }))],
      }, [x, ...present.map((k) => [...h[side][k], 0])], el));
    }
  }

  function functionTable() {
    table("function-table", [
      ["executor", (r) => r.executor],
      ["function", (r) => r.function],
      ["tasks", (r) => count(r.tasks), "num"],
      ["errors", (r) => count(r.errors), "num"],
      ["busy", (r) => duration(r.busy), "num"],
      ["CPU", (r) => duration(r.cpu), "num"],
      ["CPU share", (r) => (r.cpu_share == null ? "–" : percent(r.cpu_share)), "num"],
      ["queue p50", (r) => duration(r.queue.p50), "num"],
      ["queue p95", (r) => duration(r.queue.p95), "num"],
      ["run p50", (r) => duration(r.run.p50), "num"],
      ["run p95", (r) => duration(r.run.p95), "num"],
      ["run max", (r) => duration(r.run.max), "num"],
    ], data.functions);
  }

  // -- tables -----------------------------------------------------------------------------------------------------
  const TASK_COLUMNS = [
    ["function", (r) => r.function],
    ["executor", (r) => r.executor],
    ["worker", (r) => r.worker],
    ["started at", (r) => duration(r.start), "num"],
    ["queued", (r) => duration(r.queue), "num"],
    ["ran", (r) => duration(r.run), "num"],
    ["outcome", (r) => (r.error_type ? `${r.outcome}: ${r.error_type}` : r.outcome) +
      (r.worker_died ? " (its worker died running it)" : "")],
    ["trace id", (r) => r.trace_id, "code"],
    ["span id", (r) => r.span_id, "code"],
  ];

  function tables() {
    table("spans-table", [
      ["executor", (r) => r.executor],
      ["function", (r) => r.function],
      ["span", (r) => r.span],
      ["spans", (r) => count(r.spans), "num"],
      ["in tasks", (r) => count(r.tasks), "num"],
      ["time in all", (r) => duration(r.total), "num"],
      ["median", (r) => duration(r.p50), "num"],
      ["longest", (r) => duration(r.max), "num"],
      ["of the tasks' run", (r) => (r.share == null ? "–" : percent(r.share)), "num"],
    ], data.spans);
    if (data.summary.spans_left_out) {
      setText("spans-note", `${count(data.summary.spans_left_out)} spans that tasks made are not drawn: past the ` +
        "writer's caps (128 a task), or they would not nest in their task's bar (ended in another thread, or after it).");
    }
    table("slowest-table", TASK_COLUMNS, data.slowest);
    table("errors-table", TASK_COLUMNS, data.errors);
    if (data.summary.errors > data.errors.length) {
      setText("errors-note", `The first ${data.errors.length} of ${count(data.summary.errors)} errors.`);
    }
    table("outcomes-table", [
      ["executor", (r) => r.executor],
      ["outcome", (r) => r.outcome],
      ["exception", (r) => r.error_type],
      ["tasks", (r) => count(r.tasks), "num"],
    ], data.outcomes);
    table("blocked-table", [
      ["call", (r) => r.kind],
      ["caller", (r) => r.caller],
      ["calls", (r) => count(r.calls), "num"],
      ["blocked in all", (r) => duration(r.total), "num"],
      ["median call", (r) => duration(r.p50), "num"],
      ["longest call", (r) => duration(r.max), "num"],
    ], data.blocked);
  }

  summary();
  timeline();
  counters();
  utilization();
  cpu();
  distributions();
  document.getElementById("distribution-group").addEventListener("change", distributions);
  functionTable();
  tables();
  window.addEventListener("resize", () => {
    for (const u of [...timeCharts, ...histograms]) u.setSize({ width: width(u.root.parentElement), height: u.height });
  });
  document.body.dataset.renderMs = String(Math.round(performance.now() - started));
  document.body.dataset.ready = "true";
})();
