// Vitrine console: charts from JSON data blocks (no inline scripts: the CSP allows none), and
// confirmations for destructive forms. htmx does the rest from attributes.
(function () {
  "use strict";

  function data(id) {
    var node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }

  function affinityChart() {
    var canvas = document.getElementById("affinity-chart");
    var values = data("affinity-data");
    if (!canvas || !values || typeof Chart === "undefined") return;
    new Chart(canvas, {
      type: "bar",
      data: { labels: values.labels, datasets: [{ label: "affinity", data: values.values, backgroundColor: "#3b6ea8" }] },
      options: { indexAxis: "y", animation: false, responsive: true, plugins: { legend: { display: false } },
                 scales: { x: { beginAtZero: true } } }
    });
  }

  function ciCharts() {
    if (typeof Chart === "undefined") return;
    document.querySelectorAll("canvas.ci-chart").forEach(function (canvas) {
      var values = data(canvas.dataset.source);
      if (!values) return;
      new Chart(canvas, {
        type: "bar",
        data: { labels: values.labels, datasets: [
          { label: "95 % interval (%)", data: values.ci, backgroundColor: "rgba(59,110,168,0.35)" },
          { label: "conversion (%)", data: values.rate, type: "line", showLine: false, pointRadius: 5,
            borderColor: "#1d3b5e", backgroundColor: "#1d3b5e" }
        ] },
        options: { animation: false, responsive: true, scales: { y: { beginAtZero: true } } }
      });
    });
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.dataset && form.dataset.confirm && !window.confirm(form.dataset.confirm)) event.preventDefault();
  }, true);

  document.addEventListener("DOMContentLoaded", function () { affinityChart(); ciCharts(); });
})();
