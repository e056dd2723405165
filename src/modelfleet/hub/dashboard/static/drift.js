// The drift feature page's charts: distributions over a feature's values, not over time,
// so they use their own x scale (dashboard.js draws time series). Same rule: data from a
// <script type="application/json" id="ID"> block, drawn into <div data-xy-chart="ID">.
// Document: {x: [...], series: [{label, values, color?}], xlabel?, ylabel?, steps?, height?}.
(function () {
  "use strict";
  var PALETTE = ["#4a5568", "#2457c5", "#c53030", "#1f8a4c", "#b7791f", "#6b46c1"];

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
        points: { show: false },
      };
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
      axes: [{ label: doc.xlabel || "" }, { label: doc.ylabel || "", size: 60 }],
    }, data, el);
  }

  function drawAll(root) {
    (root || document).querySelectorAll("[data-xy-chart]").forEach(draw);
  }
  document.addEventListener("DOMContentLoaded", function () { drawAll(document); });
})();
