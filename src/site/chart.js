// Small hand-written SVG charts, shared by the live dashboard (GET /dashboard) and the
// loadtest's HTML reports (inlined into both: no network, no build step, no library).
// HeraldChart.line(svg, opts) draws lines on linear or log axes; HeraldChart.bars draws a
// bar chart. Every chart records what it plotted in svg.plotted (read by tests).
"use strict";
const HeraldChart = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777"];

  function el(name, attrs, parent, text) {
    const e = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }

  // Compact numbers: 1.2k, 3.4M; small values keep two significant digits.
  function fmt(v) {
    if (!isFinite(v)) return "–";
    const a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toPrecision(3) + "G";
    if (a >= 1e6) return (v / 1e6).toPrecision(3) + "M";
    if (a >= 1e4) return (v / 1e3).toPrecision(3) + "k";
    if (a >= 100 || a === 0) return String(Math.round(v));
    return String(+v.toPrecision(2));
  }

  // Round tick values for [lo, hi].
  function linearTicks(lo, hi, n) {
    const span = hi - lo || 1;
    const raw = span / n;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || mag * 10;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
    return out;
  }

  function logTicks(lo, hi) {
    const out = [];
    for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
      const v = Math.pow(10, e);
      if (v >= lo / 1.0001 && v <= hi * 1.0001) out.push(v);
    }
    return out.length >= 2 ? out : [lo, hi];
  }

  function frame(svg, opts) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const w = opts.width || svg.clientWidth || 600;
    const h = opts.height || svg.clientHeight || 240;
    svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    svg.setAttribute("font-family", "system-ui, sans-serif");
    svg.setAttribute("font-size", "11");
    const m = { l: 56, r: 12, t: opts.title ? 22 : 8, b: opts.xLabel ? 34 : 22 };
    if (opts.title) el("text", { x: m.l, y: 14, "font-weight": "600", fill: "currentColor" }, svg, opts.title);
    return { w, h, m, pw: w - m.l - m.r, ph: h - m.t - m.b };
  }

  // opts: { series: [{ name, color?, points: [[x, y], ...], dash? }], logY, xTicks: [{ v, label }],
  //         xFormat(x), yFormat(y), xLabel, yLabel, title, xMin, xMax, yMin, yMax }
  function line(svg, opts) {
    const f = frame(svg, opts);
    const series = opts.series.filter((s) => s.points.length > 0);
    const pts = series.flatMap((s) => s.points).filter(([, y]) => isFinite(y) && (!opts.logY || y > 0));
    svg.plotted = opts.series.map((s) => ({ name: s.name, points: s.points.map((p) => [p[0], p[1]]) }));
    if (pts.length === 0) {
      el("text", { x: f.m.l + f.pw / 2, y: f.m.t + f.ph / 2, "text-anchor": "middle", fill: "#888" }, svg, opts.empty || "no data yet");
      return;
    }
    let xMin = opts.xMin ?? Math.min(...pts.map((p) => p[0]));
    let xMax = opts.xMax ?? Math.max(...pts.map((p) => p[0]));
    if (xMax === xMin) xMax = xMin + 1;
    let yMin = opts.yMin ?? (opts.logY ? Math.min(...pts.map((p) => p[1])) : 0);
    let yMax = opts.yMax ?? Math.max(...pts.map((p) => p[1]));
    if (opts.logY) {
      yMin = Math.pow(10, Math.floor(Math.log10(yMin)));
      yMax = Math.pow(10, Math.ceil(Math.log10(Math.max(yMax, yMin * 10))));
    } else if (yMax <= yMin) yMax = yMin + 1;
    const X = (x) => f.m.l + ((x - xMin) / (xMax - xMin)) * f.pw;
    const Y = opts.logY
      ? (y) => f.m.t + f.ph - ((Math.log10(y) - Math.log10(yMin)) / (Math.log10(yMax) - Math.log10(yMin))) * f.ph
      : (y) => f.m.t + f.ph - ((y - yMin) / (yMax - yMin)) * f.ph;
    const grid = { stroke: "currentColor", "stroke-opacity": "0.12" };
    const yFormat = opts.yFormat || fmt;
    for (const v of opts.logY ? logTicks(yMin, yMax) : linearTicks(yMin, yMax, 4)) {
      el("line", { x1: f.m.l, x2: f.m.l + f.pw, y1: Y(v), y2: Y(v), ...grid }, svg);
      el("text", { x: f.m.l - 6, y: Y(v) + 4, "text-anchor": "end", fill: "currentColor", "fill-opacity": "0.7" }, svg, yFormat(v));
    }
    const xFormat = opts.xFormat || fmt;
    const xTicks = opts.xTicks || linearTicks(xMin, xMax, 6).map((v) => ({ v, label: xFormat(v) }));
    for (const t of xTicks) {
      if (t.v < xMin || t.v > xMax) continue;
      el("line", { x1: X(t.v), x2: X(t.v), y1: f.m.t, y2: f.m.t + f.ph, ...grid }, svg);
      el("text", { x: X(t.v), y: f.m.t + f.ph + 14, "text-anchor": "middle", fill: "currentColor", "fill-opacity": "0.7" }, svg, t.label);
    }
    if (opts.xLabel) el("text", { x: f.m.l + f.pw / 2, y: f.h - 4, "text-anchor": "middle", fill: "currentColor" }, svg, opts.xLabel);
    if (opts.yLabel) el("text", { x: 12, y: f.m.t + f.ph / 2, transform: `rotate(-90 12 ${f.m.t + f.ph / 2})`, "text-anchor": "middle", fill: "currentColor" }, svg, opts.yLabel);
    let legendX = f.m.l + 8;
    series.forEach((s, i) => {
      const color = s.color || PALETTE[i % PALETTE.length];
      const d = s.points
        .filter(([x, y]) => isFinite(y) && (!opts.logY || y > 0))
        .map(([x, y], j) => `${j ? "L" : "M"}${X(x).toFixed(1)},${Y(Math.min(Math.max(y, yMin), yMax)).toFixed(1)}`)
        .join("");
      el("path", { d, fill: "none", stroke: color, "stroke-width": "1.8", "stroke-dasharray": s.dash || "none", "data-series": s.name }, svg);
      if (series.length > 1 || opts.legend) {
        el("rect", { x: legendX, y: f.m.t + 4, width: 10, height: 10, fill: color }, svg);
        const t = el("text", { x: legendX + 14, y: f.m.t + 13, fill: "currentColor" }, svg, s.name);
        legendX += 24 + 6.5 * s.name.length;
        void t;
      }
    });
  }

  // opts: { labels: [...], values: [...], color, yFormat, title, xLabel }
  function bars(svg, opts) {
    const f = frame(svg, opts);
    svg.plotted = [{ name: "bars", points: opts.labels.map((l, i) => [l, opts.values[i]]) }];
    const max = Math.max(1, ...opts.values);
    const n = opts.values.length;
    const bw = f.pw / n;
    for (const v of linearTicks(0, max, 3)) {
      const y = f.m.t + f.ph - (v / max) * f.ph;
      el("line", { x1: f.m.l, x2: f.m.l + f.pw, y1: y, y2: y, stroke: "currentColor", "stroke-opacity": "0.12" }, svg);
      el("text", { x: f.m.l - 6, y: y + 4, "text-anchor": "end", fill: "currentColor", "fill-opacity": "0.7" }, svg, (opts.yFormat || fmt)(v));
    }
    opts.values.forEach((v, i) => {
      const h = (v / max) * f.ph;
      el("rect", { x: f.m.l + i * bw + 1, y: f.m.t + f.ph - h, width: Math.max(1, bw - 2), height: h, fill: opts.color || PALETTE[0] }, svg);
      if (i % Math.ceil(n / 9) === 0)
        el("text", { x: f.m.l + i * bw + bw / 2, y: f.m.t + f.ph + 14, "text-anchor": "middle", fill: "currentColor", "fill-opacity": "0.7" }, svg, opts.labels[i]);
    });
    if (opts.xLabel) el("text", { x: f.m.l + f.pw / 2, y: f.h - 4, "text-anchor": "middle", fill: "currentColor" }, svg, opts.xLabel);
  }

  // The HdrHistogram plot's x axis: a percentile p (0..100) at -log10(1 - p/100), so that
  // 90, 99, 99.9, 99.99 are evenly spaced.
  function percentileX(p) {
    return -Math.log10(Math.max(1e-7, 1 - p / 100));
  }
  const PERCENTILE_TICKS = [0, 90, 99, 99.9, 99.99, 99.999, 99.9999].map((p) => ({ v: percentileX(p), label: p + "%" }));

  return { line, bars, fmt, percentileX, PERCENTILE_TICKS, PALETTE };
})();
