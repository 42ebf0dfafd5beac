// shortflow web pages: draws the charts of the page from its JSON data (no inline script).
(function () {
  "use strict";
  var data = document.getElementById("usage-data");
  if (!data || typeof uPlot === "undefined") { return; }
  var charts = JSON.parse(data.textContent || "[]");
  var colors = { short: "#d9480f", long: "#1971c2", other: "#868e96" };
  var names = { short: "short-form", long: "long-form", other: "other" };
  var plots = [];

  function width(el) { return Math.max(240, el.clientWidth || 300); }

  function draw(el, c) {
    var kinds = ["short", "long", "other"];
    var series = [{}];
    var cols = [c.t];
    kinds.forEach(function (k) {
      series.push({
        label: names[k],
        stroke: colors[k],
        fill: colors[k] + "33",
        width: 1.5,
        points: { show: false },
        paths: uPlot.paths.stepped({ align: 1 })
      });
      cols.push(c[k]);
    });
    var opts = {
      width: width(el),
      height: 160,
      series: series,
      scales: { y: { range: function (u, min, max) { return [0, Math.max(1, max)]; } } },
      axes: [{}, { size: 40, label: c.unit || "", labelSize: 16 }],
      legend: { live: false },
      cursor: { drag: { x: false, y: false } }
    };
    var plot = new uPlot(opts, cols, el);
    plots.push([plot, el]);
  }

  document.querySelectorAll(".chart[data-chart]").forEach(function (el) {
    var c = charts[Number(el.getAttribute("data-chart"))];
    if (c) { draw(el, c); }
  });

  var pending = null;
  window.addEventListener("resize", function () {
    clearTimeout(pending);
    pending = setTimeout(function () {
      plots.forEach(function (p) { p[0].setSize({ width: width(p[1]), height: 160 }); });
    }, 150);
  });
}());
