/* /dashboard/: renders snapshots pushed over /ws/dashboard/ (one shared producer, ~1 per second). */
(function () {
  "use strict";
  var root = document.getElementById("dashboard");
  var stateEl = document.getElementById("conn-state");
  var updatedEl = document.getElementById("updated-at");
  var frames = 0;
  var SEVERITY = { info: "提示", warning: "警告", critical: "严重" };
  var retryDelay = 1000;

  function fmt(key, value) {
    if (value === null || value === undefined) return "–";
    if (key === "cache_hit_rate" || key === "budget_used_ratio") return (value * 100).toFixed(1) + "%";
    if (key === "cost_today") return Number(value).toFixed(4);
    if (key === "budget_limit") return Number(value).toFixed(2);
    return String(value);
  }

  function timeLabel(iso) {
    var d = new Date(iso);
    return d.toLocaleTimeString("zh-CN", { hour12: false });
  }

  function lineChart(id, label, color) {
    var canvas = document.getElementById(id);
    if (!window.Chart || !canvas) return null;
    return new Chart(canvas, {
      type: "line",
      data: { labels: [], datasets: [{ label: label, data: [], borderColor: color, backgroundColor: color,
        cubicInterpolationMode: "monotone", pointRadius: 2 }] },
      options: { animation: false, responsive: true, maintainAspectRatio: false,
        plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true } } }
    });
  }

  var charts = {
    response: lineChart("chart-response", "ms", "#417690"),
    messages: lineChart("chart-messages", "条", "#27ae60"),
    cost: lineChart("chart-cost", "元", "#d35400")
  };

  function setSeries(chart, points, key) {
    if (!chart) return;
    chart.data.labels = points.map(function (p) { return timeLabel(p.at); });
    chart.data.datasets[0].data = points.map(function (p) { return p[key]; });
    chart.update("none");
  }

  function renderAlerts(alerts) {
    var body = document.getElementById("alerts");
    body.textContent = "";
    if (!alerts.length) {
      var tr = document.createElement("tr");
      tr.className = "none";
      var td = document.createElement("td");
      td.colSpan = 5;
      td.textContent = "无";
      tr.appendChild(td);
      body.appendChild(tr);
      return;
    }
    alerts.forEach(function (a) {
      var tr = document.createElement("tr");
      tr.className = "sev-" + a.severity;
      [a.rule, a.agent || "–", SEVERITY[a.severity] || a.severity, a.value, timeLabel(a.fired_at)].forEach(function (text) {
        var td = document.createElement("td");
        td.textContent = text;
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
  }

  function render(snapshot) {
    Object.keys(snapshot.cards).forEach(function (key) {
      document.querySelectorAll('[data-card="' + key + '"]').forEach(function (el) {
        el.textContent = fmt(key, snapshot.cards[key]);
      });
    });
    setSeries(charts.response, snapshot.charts.response_times, "ms");
    setSeries(charts.messages, snapshot.charts.messages_per_minute, "n");
    setSeries(charts.cost, snapshot.charts.cost_per_minute, "cost");
    renderAlerts(snapshot.alerts);
    updatedEl.textContent = "更新于 " + timeLabel(snapshot.ts);
    root.dataset.frames = String(frames);
    root.dataset.ts = snapshot.ts;
  }

  function setState(state, text) {
    stateEl.dataset.state = state;
    stateEl.textContent = text;
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var ws = new WebSocket(scheme + location.host + root.dataset.wsPath);
    ws.onopen = function () { setState("live", "实时"); retryDelay = 1000; };
    ws.onmessage = function (event) {
      frames += 1;
      render(JSON.parse(event.data));
    };
    ws.onclose = function (event) {
      if (event.code === 4403) { location.reload(); return; }  // session gone: the page asks to log in
      setState("closed", "连接断开，" + Math.round(retryDelay / 1000) + " 秒后重连…");
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 10000);
    };
  }

  render(JSON.parse(document.getElementById("initial-snapshot").textContent));
  connect();
})();
