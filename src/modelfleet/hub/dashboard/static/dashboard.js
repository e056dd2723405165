// modelfleet dashboard glue: CSRF on every htmx request, charts from JSON data blocks.
// No inline scripts anywhere (the pages' Content-Security-Policy forbids them): a page
// declares a chart with <div class="chart" data-chart="ID"> and a
// <script type="application/json" id="ID"> block holding {x: [...unix s], series: [{label, values}], unit}.
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
    return (Math.round(v * 100) / 100).toString();
  }

  function draw(el) {
    var source = document.getElementById(el.getAttribute("data-chart"));
    if (!source || typeof uPlot === "undefined") return;
    var doc = JSON.parse(source.textContent);
    if (el._plot) { el._plot.destroy(); }
    var series = [{}];
    var data = [doc.x];
    doc.series.forEach(function (s, i) {
      series.push({
        label: s.label,
        stroke: s.color || PALETTE[i % PALETTE.length],
        width: s.width || 1.5,
        dash: s.dash || undefined,
        spanGaps: false,
        value: function (u, v) { return formatValue(doc.unit, v); },
      });
      data.push(s.values);
    });
    var width = Math.max(320, el.clientWidth - 16);
    el._plot = new uPlot({
      width: width,
      height: doc.height || 220,
      series: series,
      axes: [{}, { values: function (u, ticks) { return ticks.map(function (v) { return formatValue(doc.unit, v); }); }, size: 70 }],
      scales: { x: { time: true } },
    }, data, el);
  }

  function drawAll(root) {
    (root || document).querySelectorAll("[data-chart]").forEach(draw);
  }
  window.modelfleet = { drawCharts: drawAll, csrf: csrf };
  document.addEventListener("DOMContentLoaded", function () { drawAll(document); });
  document.addEventListener("htmx:afterSettle", function (event) { drawAll(event.target); });
})();
