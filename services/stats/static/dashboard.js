// The stats dashboard: fetches api/dashboard and draws small SVG charts. No libraries, no
// innerHTML: user and group names are only ever set as text.
"use strict";

const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs, text) {
  const node = tag.startsWith("svg:")
    ? document.createElementNS(SVG, tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function niceMax(value) {
  if (value <= 1) return 1;
  const step = Math.pow(10, Math.floor(Math.log10(value)));
  for (const m of [1, 2, 5, 10]) if (m * step >= value) return m * step;
  return value;
}

function label(t, range) {
  const d = new Date(t);
  const pad = (n) => String(n).padStart(2, "0");
  if (range === "day") return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
  if (range === "week") return `${d.getUTCMonth() + 1}/${d.getUTCDate()} ${pad(d.getUTCHours())}h`;
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
}

function frame(width, height, max) {
  const svg = el("svg:svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  const y = (v) => 10 + (height - 40) * (1 - v / max);
  for (const v of [0, max / 2, max]) {
    svg.append(el("svg:line", { class: "axis", x1: 40, x2: width - 5, y1: y(v), y2: y(v) }));
    svg.append(el("svg:text", { x: 35, y: y(v) + 4, "text-anchor": "end" }, String(+v.toFixed(1))));
  }
  return { svg, y };
}

function lineChart(box, data, range) {
  box.replaceChildren();
  const width = 900, height = 260;
  const keys = ["active_users", "running_servers"];
  const max = niceMax(Math.max(1, ...data.series.flatMap((p) => keys.map((k) => p[k]))));
  const { svg, y } = frame(width, height, max);
  const n = Math.max(1, data.series.length - 1);
  const x = (i) => 40 + ((width - 50) * i) / n;
  keys.forEach((k, s) => {
    const points = data.series.map((p, i) => `${x(i).toFixed(1)},${y(p[k]).toFixed(1)}`);
    svg.append(el("svg:polyline", { class: `s${s}`, points: points.join(" ") }));
  });
  const ticks = 6;
  for (let j = 0; j <= ticks; j++) {
    const i = Math.round((n * j) / ticks);
    const p = data.series[i];
    const anchor = j === 0 ? "start" : j === ticks ? "end" : "middle";
    if (p) svg.append(el("svg:text", { x: x(i), y: height - 12, "text-anchor": anchor }, label(p.t, range)));
  }
  const legend = el("div", { class: "legend" });
  legend.append(el("span", { class: "k0" }, "active users"));
  legend.append(el("span", { class: "k1" }, range === "semester" ? "users with a server" : "running servers"));
  box.append(svg, legend);
}

function barChart(box, labels, series, names) {
  box.replaceChildren();
  if (!labels.length || !series[0].some((v) => v > 0)) {
    box.append(el("p", { class: "empty" }, "Nothing in this range yet."));
    return;
  }
  const row = 22, width = 520, left = 150, height = labels.length * row + 10;
  const max = niceMax(Math.max(...series.flat()));
  const svg = el("svg:svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  labels.forEach((name, i) => {
    svg.append(el("svg:text", { x: left - 6, y: i * row + 15, "text-anchor": "end" }, name));
    series.forEach((values, s) => {
      const w = ((width - left - 60) * values[i]) / max;
      const h = (row - 6) / series.length;
      svg.append(el("svg:rect", {
        class: s ? "bar alt" : "bar", x: left, y: i * row + 3 + s * h, width: Math.max(w, 0.5), height: h,
      }));
    });
    svg.append(el("svg:text", { x: left + 4 + ((width - left - 60) * Math.max(...series.map((v) => v[i]))) / max, y: i * row + 15 },
      series.map((v) => +v[i].toFixed(1)).join(" / ")));
  });
  box.append(svg);
  if (names) {
    const legend = el("div", { class: "legend" });
    names.forEach((nm, s) => legend.append(el("span", { class: s ? "k0" : "k1" }, nm)));
    box.append(legend);
  }
}

function duration(seconds) {
  if (seconds < 3600) return `${seconds / 60} min`;
  if (seconds < 86400) return `${seconds / 3600} h`;
  return `${seconds / 86400} d`;
}

// An ISO 8601 time (the culls table's "at") in the reader's words and time zone.
const timeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
function humanTime(value) {
  if (typeof value !== "string" || !/^\d{4}-\d\d-\d\dT\d\d:\d\d/.test(value)) return value;
  const utc = /([zZ]|[+-]\d\d:?\d\d)$/.test(value) ? value : `${value}Z`;  // stored as UTC
  const moment = new Date(utc);
  return Number.isNaN(moment.getTime()) ? value : timeFormat.format(moment);
}

function table(box, columns, rows, numeric) {
  box.replaceChildren();
  if (!rows.length) {
    box.append(el("p", { class: "empty" }, "None."));
    return;
  }
  const t = el("table");
  const head = el("tr");
  columns.forEach((c, i) => head.append(el("th", numeric[i] ? { class: "num" } : {}, c)));
  t.append(head);
  for (const r of rows) {
    const tr = el("tr");
    r.forEach((v, i) => tr.append(el("td", numeric[i] ? { class: "num" } : {}, v === null ? "" : String(v))));
    t.append(tr);
  }
  box.append(t);
}

async function load(root, range) {
  const status = document.getElementById("status");
  for (const b of root.querySelectorAll("[data-range]")) b.classList.toggle("on", b.dataset.range === range);
  status.className = "status";
  status.textContent = "Loading…";
  let data;
  try {
    // the hub's cookie authenticates a script's request only with the XSRF token beside it
    const r = await fetch(`${root.dataset.api}dashboard?range=${range}`, {
      credentials: "same-origin",
      headers: { "X-XSRFToken": root.dataset.xsrf },
    });
    data = await r.json();
    if (!r.ok) throw new Error(data.message || r.statusText);
  } catch (e) {
    status.className = "status error";
    status.textContent = `Could not load the data: ${e.message}`;
    return;
  }
  lineChart(document.getElementById("chart-series"), data, range);
  barChart(document.getElementById("chart-users"), data.users.map((u) => u.user),
    [data.users.map((u) => u.server_hours), data.users.map((u) => u.active_hours)],
    ["server hours", "active hours"]);
  const edges = data.session_lengths.buckets;
  const lengthLabels = edges.map((e) => `≤ ${duration(e)}`).concat([`> ${duration(edges[edges.length - 1])}`]);
  barChart(document.getElementById("chart-lengths"), lengthLabels, [data.session_lengths.counts]);
  table(document.getElementById("groups"), ["group", "members", "active users", "server hours"],
    data.groups.map((g) => [g.group, g.members, g.active_users, g.server_hours]), [false, true, true, true]);
  const culls = document.getElementById("culls");
  if (data.culls === null) {
    culls.replaceChildren(el("p", { class: "empty" }, "The cull service's records are not in this database."));
  } else {
    table(culls, data.culls.columns.map((c) => c.replace(/_/g, " ")),
      data.culls.rows.map((r) => r.map(humanTime)), data.culls.columns.map(() => false));
  }
  status.textContent = `Last ${range}: ${data.users.length} users with usage. Chart times are UTC.`;
}

document.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("dashboard");
  for (const b of root.querySelectorAll("[data-range]")) b.addEventListener("click", () => load(root, b.dataset.range));
  load(root, "week");
});
