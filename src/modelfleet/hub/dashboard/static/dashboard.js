// modelfleet dashboard glue: CSRF on every htmx request, charts from JSON data blocks.
// No inline scripts anywhere (the pages' Content-Security-Policy forbids them): a page
// declares a chart with <div class="chart" data-chart="ID"> (x is time, unix seconds) or
// <div class="chart" data-xy-chart="ID"> (x is a value or a round number), and a
// <script type="application/json" id="ID"> block holding
//   {x: [...], series: [{label, values, color?, dash?}], unit?: "s"|"ratio"|"",
//    xlabel?, ylabel?, integer_x?, steps?, points?, height?}
// (null values are gaps). Content that htmx swaps in loses its <script> tags
// (allowScriptTags is off), so a live fragment holds its data in <div hidden id="ID">.
(function () {
  "use strict";
  function csrf() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }
  document.addEventListener("htmx:configRequest", function (event) {
    event.detail.headers["X-CSRF-Token"] = csrf();
  });

  var PALETTE = ["#2457c5", "#c53030", "#1f8a4c", "#b7791f", "#6b46c1", "#2c7a7b", "#d53f8c", "#4a5568"];

  function formatValue(unit, v) {
    if (v == null) return "—";
    if (unit === "s") return (v * 1000).toFixed(v < 0.01 ? 2 : 0) + " ms";
    if (unit === "ratio") return (v * 100).toFixed(1) + " %";
    return (Math.round(v * 1000) / 1000).toString();
  }

  function xAxis(doc, time) {
    var axis = { label: doc.xlabel || "" };
    if (!time && doc.integer_x) {  // rounds: ticks at whole numbers only
      axis.incrs = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000];
      axis.values = function (u, ticks) { return ticks.map(function (v) { return String(v); }); };
    }
    return axis;
  }

  function draw(el, time) {
    var source = document.getElementById(el.getAttribute(time ? "data-chart" : "data-xy-chart"));
    if (!source || typeof uPlot === "undefined") return;
    var doc = JSON.parse(source.textContent);
    if (el._plot) { el._plot.destroy(); }
    var series = [{ label: doc.xlabel || (time ? "time" : "x") }];
    var data = [doc.x];
    doc.series.forEach(function (s, i) {
      var opts = {
        label: s.label,
        stroke: s.color || PALETTE[i % PALETTE.length],
        width: s.width || 1.5,
        spanGaps: false,
        // Points where asked, on round axes, and on sparse series (one point draws no line).
        points: {
          show: doc.points === undefined
            ? (!time && !!doc.integer_x) || s.values.filter(function (v) { return v != null; }).length < 3
            : !!doc.points,
        },
        value: function (u, v) { return formatValue(doc.unit, v); },
      };
      if (s.dash) { opts.dash = s.dash; }
      if (doc.steps && uPlot.paths && uPlot.paths.stepped) {
        opts.paths = uPlot.paths.stepped({ align: 1 });
      }
      series.push(opts);
      data.push(s.values);
    });
    el._plot = new uPlot({
      width: Math.max(320, el.clientWidth - 16),
      height: doc.height || (time ? 220 : 240),
      series: series,
      axes: [xAxis(doc, time), {
        label: doc.ylabel || "",
        size: 70,
        values: function (u, ticks) { return ticks.map(function (v) { return formatValue(doc.unit, v); }); },
      }],
      scales: { x: { time: time } },
    }, data, el);
  }

  function drawAll(root) {
    var scope = root || document;
    scope.querySelectorAll("[data-chart]").forEach(function (el) { draw(el, true); });
    scope.querySelectorAll("[data-xy-chart]").forEach(function (el) { draw(el, false); });
  }
  window.modelfleet = { drawCharts: drawAll, csrf: csrf };
  document.addEventListener("DOMContentLoaded", function () { drawAll(document); });
  document.addEventListener("htmx:afterSettle", function (event) { drawAll(event.target); });
})();
