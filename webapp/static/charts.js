// Charts over time on the dashboard: chunks/s, per-worker speed, carbon intensity per region with
// each deferred job's threshold (and why it waits), tokens minted per day. Data: GET /api/history.
// Drawn as SVG by this file (no library): elements and attributes only, no inline style, so the
// strict CSP holds; colours come from CSS classes in charts.css. Text is set with textContent.
"use strict";

(function () {
  const NS = "http://www.w3.org/2000/svg";
  const root = document.body.dataset.root || "";
  let W = 640; // set to the container's width before each chart is drawn: 1 SVG unit = 1 CSS pixel
  const H = 170;
  const PAD = { left: 46, right: 10, top: 20, bottom: 22 };
  const SERIES_CLASSES = 8; // .series-0 ... .series-7 in charts.css
  const REFRESH_MS = 60000; // at least this often; sooner (at most every THROTTLE_MS) when the dashboard updates
  const THROTTLE_MS = 10000;

  function svg(tag, attrs, className) {
    const node = document.createElementNS(NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    if (className) node.setAttribute("class", className);
    return node;
  }

  function html(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  function compact(v) {
    const a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(a >= 1e10 ? 0 : 1) + "G";
    if (a >= 1e6) return (v / 1e6).toFixed(a >= 1e7 ? 0 : 1) + "M";
    if (a >= 1e3) return (v / 1e3).toFixed(a >= 1e4 ? 0 : 1) + "k";
    if (a >= 10 || v === 0) return v.toFixed(0);
    if (a >= 1) return v.toFixed(1);
    return String(Number(v.toPrecision(2)));
  }

  function niceMax(v) { // four grid steps of 1, 2, 2.5 or 5 times a power of ten
    if (!(v > 0)) return 1;
    const raw = v / 4;
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= raw) return 4 * m * p;
    return 40 * p;
  }

  function clock(t) {
    return new Date(t * 1000).toISOString().slice(11, 16);
  }

  function frame(container, yMax, x0, x1, unit) {
    W = Math.max(240, Math.round(container.clientWidth || 640));
    const chart = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img" }, "chart-svg");
    const plotW = W - PAD.left - PAD.right;
    const plotH = H - PAD.top - PAD.bottom;
    const x = (t) => PAD.left + (x1 > x0 ? ((t - x0) / (x1 - x0)) * plotW : plotW / 2);
    const y = (v) => PAD.top + plotH - (Math.min(v, yMax) / yMax) * plotH;
    for (let i = 0; i <= 4; i++) {
      const v = (yMax * i) / 4;
      chart.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }, "grid"));
      const label = svg("text", { x: PAD.left - 6, y: y(v) + 4, "text-anchor": "end" }, "tick");
      label.textContent = compact(v);
      chart.append(label);
    }
    if (unit) {
      const u = svg("text", { x: 2, y: 10, "text-anchor": "start" }, "tick unit");
      u.textContent = unit;
      chart.append(u);
    }
    container.replaceChildren(chart);
    return { chart, x, y };
  }

  function timeTicks(f, x0, x1) {
    const span = x1 - x0;
    const step = [60, 300, 600, 900, 1800, 3600, 7200].find((s) => span / s <= 6) || 7200;
    for (let t = Math.ceil(x0 / step) * step; t <= x1; t += step) {
      const label = svg("text", { x: f.x(t), y: H - 6, "text-anchor": "middle" }, "tick");
      label.textContent = clock(t);
      f.chart.append(label);
    }
  }

  function legend(container, items) {
    const list = html("ul", undefined, "legend");
    items.forEach((item) => {
      const li = html("li");
      li.append(html("span", "", "swatch " + item.className), " " + item.name);
      list.append(li);
    });
    container.append(list);
  }

  function empty(container, text) {
    container.replaceChildren(html("p", text, "chart-empty"));
  }

  // series: [{name, points: [[t, v], ...]}]; thresholds: [{value, label}]
  function lineChart(container, series, opts) {
    const drawn = series.filter((s) => s.points.length);
    if (!drawn.length && !(opts.thresholds || []).length) return empty(container, opts.empty);
    let top = 0;
    for (const s of drawn) for (const [, v] of s.points) top = Math.max(top, v);
    for (const t of opts.thresholds || []) top = Math.max(top, t.value);
    const f = frame(container, niceMax(top * 1.05), opts.x0, opts.x1, opts.unit);
    timeTicks(f, opts.x0, opts.x1);
    const items = [];
    drawn.forEach((s, i) => {
      const className = "series-" + (i % SERIES_CLASSES);
      const group = svg("g", { "data-series": s.name }, "series " + className);
      group.append(svg("polyline", { points: s.points.map(([t, v]) => f.x(t).toFixed(1) + "," + f.y(v).toFixed(1)).join(" ") }));
      if (s.points.length <= 120) { // dots where there is room for them
        for (const [t, v] of s.points) {
          const dot = svg("circle", { cx: f.x(t).toFixed(1), cy: f.y(v).toFixed(1), r: 2.5 }, "pt");
          const tip = svg("title");
          tip.textContent = s.name + ": " + compact(v) + " at " + clock(t) + " UTC";
          dot.append(tip);
          group.append(dot);
        }
      }
      f.chart.append(group);
      items.push({ name: s.name, className: className });
    });
    for (const t of opts.thresholds || []) {
      const line = svg("line", { x1: PAD.left, x2: W - PAD.right, y1: f.y(t.value), y2: f.y(t.value) }, "threshold");
      line.setAttribute("data-job", t.job);
      f.chart.append(line);
      const label = svg("text", { x: W - PAD.right - 4, y: f.y(t.value) - 4, "text-anchor": "end" }, "threshold-label");
      label.textContent = t.label;
      f.chart.append(label);
    }
    legend(container, items);
  }

  function barChart(container, bars, opts) {
    if (!bars.some(([, v]) => v > 0)) return empty(container, opts.empty);
    const top = niceMax(Math.max(...bars.map(([, v]) => v)) * 1.05);
    const f = frame(container, top, 0, bars.length, opts.unit);
    const slot = (W - PAD.left - PAD.right) / bars.length;
    bars.forEach(([label, v], i) => {
      const x = PAD.left + i * slot + slot * 0.15;
      const bar = svg("rect", { x: x.toFixed(1), y: f.y(v).toFixed(1), width: (slot * 0.7).toFixed(1),
        height: Math.max(0, H - PAD.bottom - f.y(v)).toFixed(1), "data-day": label }, "bar");
      const tip = svg("title");
      tip.textContent = label + ": " + compact(v) + " " + opts.unit;
      bar.append(tip);
      f.chart.append(bar);
      const every = Math.ceil(bars.length / 7);
      if ((bars.length - 1 - i) % every === 0) { // the newest day always labelled
        const text = svg("text", { x: (x + slot * 0.35).toFixed(1), y: H - 6, "text-anchor": "middle" }, "tick");
        text.textContent = label.slice(5);
        f.chart.append(text);
      }
    });
  }

  function draw(h) {
    const x1 = h.now;
    const x0 = h.now - h.window_s;
    const only = document.getElementById("charts").dataset.job; // a job's page: only its threshold
    const node = (id) => document.getElementById(id);
    if (node("chart-chunks")) {
      lineChart(node("chart-chunks"), [{ name: "chunks/s", points: h.chunks_per_s }],
        { x0, x1, unit: "chunks/s", empty: "No chunk merged in this window." });
    }
    for (const kind of ["pi", "mandelbrot"]) {
      if (!node("chart-speed-" + kind)) continue;
      const series = Object.entries(h.worker_speed)
        .filter(([, kinds]) => kinds[kind])
        .map(([worker, kinds]) => ({ name: worker, points: kinds[kind] }));
      lineChart(node("chart-speed-" + kind), series, { x0, x1, unit: kind === "pi" ? "samples/s" : "iterations/s",
        empty: "No " + (kind === "pi" ? "π" : "Mandelbrot") + " chunk measured in this window." });
    }
    const deferredJobs = h.deferred.filter((j) => !only || j.id === only);
    if (node("chart-carbon")) {
      const carbon = Object.entries(h.carbon).map(([region, points]) => ({ name: region, points: points }));
      const thresholds = deferredJobs.filter((j) => j.carbon_threshold !== null)
        .map((j) => ({ value: j.carbon_threshold, job: j.id,
          label: (only ? "this job" : "job " + j.id.slice(0, 8)) + ": " + Math.round(j.carbon_threshold) }));
      lineChart(node("chart-carbon"), carbon, { x0, x1, unit: "gCO₂/kWh", thresholds,
        empty: "No carbon intensity sampled yet (the control plane samples each region once a minute)." });
    }
    if (node("deferred-jobs")) {
      node("deferred-jobs").replaceChildren(...deferredJobs.map((j) => {
        const li = html("li", undefined, j.waiting ? "deferred waiting" : "deferred");
        if (!only) {
          const link = html("a");
          link.href = root + "/jobs/" + encodeURIComponent(j.id);
          link.append(html("code", j.id));
          li.append(link, " ");
        }
        li.append(html("span", j.why, "why"));
        return li;
      }));
    }
    if (node("chart-minted")) {
      barChart(node("chart-minted"), h.minted_per_day_micro.map(([day, micro]) => [day, micro / 1e6]),
        { unit: "tokens", empty: "No tokens minted in these days." });
    }
  }

  let last = 0;
  let pending = null;

  async function refresh() {
    last = Date.now();
    const status = document.getElementById("charts-status");
    try {
      const response = await fetch(root + "/api/history?minutes=60&days=14", { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error("HTTP " + response.status);
      draw(await response.json());
      if (status) status.textContent = "as of " + clock(Date.now() / 1000) + " UTC";
    } catch (err) {
      if (status) status.textContent = "charts not updating: " + err.message;
    }
  }

  function soon() { // an update arrived: redraw, at most every THROTTLE_MS
    if (pending) return;
    const wait = Math.max(0, last + THROTTLE_MS - Date.now());
    pending = window.setTimeout(() => { pending = null; refresh(); }, wait);
  }

  if (!document.getElementById("charts")) return;
  refresh();
  document.addEventListener("hydra:update", (event) => {
    if (event.detail && (event.detail.topic === "jobs" || event.detail.topic === "job")) soon();
  });
  window.setInterval(() => { if (!document.hidden && Date.now() - last >= REFRESH_MS) refresh(); }, 5000);
})();
