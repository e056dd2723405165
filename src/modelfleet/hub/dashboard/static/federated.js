// A federated job page's charts: metrics over rounds, not over time,
// so they use their own x scale (dashboard.js draws time series). Same rule: data from a
// <script type="application/json" id="ID"> block, drawn into <div data-xy-chart="ID">.
// Document: {x: [...], series: [{label, values, color?, dash?}], xlabel?, ylabel?, integer_x?,
// steps?, height?}.
(function () {
  "use strict";
  var PALETTE = ["#2457c5", "#c53030", "#1f8a4c", "#b7791f", "#6b46c1", "#2c7a7b", "#d53f8c", "#4a5568"];

  // Rounds are whole numbers: ticks at integer steps only, labelled without decimals.
  function xAxis(doc) {
    var axis = { label: doc.xlabel || "" };
    if (doc.integer_x) {
      axis.incrs = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000];
      axis.values = function (u, ticks) { return ticks.map(function (v) { return String(v); }); };
    }
    return axis;
  }

  function draw(el) {
    var source = document.getElementById(el.getAttribute("data-xy-chart"));
    if (!source || typeof uPlot === "undefined") return;
    var doc = JSON.parse(source.textContent);
    if (el._plot) { el._plot.destroy(); }
    var series = [{ label: doc.xlabel || "x" }];
    var data = [doc.x];
    doc.series.forEach(function (s, i) {
      var opts = {
        label: s.label,
        stroke: s.color || PALETTE[i % PALETTE.length],
        width: 1.5,
        spanGaps: false,
        points: { show: true },
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
      height: doc.height || 240,
      series: series,
      scales: { x: { time: false } },
      axes: [xAxis(doc), { label: doc.ylabel || "", size: 60 }],
    }, data, el);
  }

  function drawAll(root) {
    (root || document).querySelectorAll("[data-xy-chart]").forEach(draw);
  }
  document.addEventListener("DOMContentLoaded", function () { drawAll(document); });
})();
