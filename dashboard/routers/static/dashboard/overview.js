/* The overview: one row per router, updated from the live feed. */
(function () {
  "use strict";
  var lastReload = 0;
  function fmt(value) {
    if (value === null || value === undefined) return "";
    if (typeof value !== "number") return String(value);
    if (Math.abs(value) >= 1e4) return (value / 1e3).toFixed(1) + "k";
    return Number.isInteger(value) ? String(value) : value.toFixed(1);
  }
  function update(msg) {
    var row = document.querySelector('tr[data-router="' + CSS.escape(msg.router) + '"]');
    if (!row) {
      // A router added since the page was loaded: show it (at most every 10 s).
      if (Date.now() - lastReload > 10000) { lastReload = Date.now(); location.reload(); }
      return;
    }
    var status = row.querySelector('[data-field="status"]');
    status.textContent = msg.up ? "up" : "down";
    status.className = "status " + (msg.up ? "up" : "down");
    status.title = msg.error || "";
    if (!msg.up) return;
    row.querySelector('[data-field="peers"]').textContent = fmt(msg.peers);
    row.querySelector('[data-field="in"]').textContent = fmt(msg.messages_in_per_s);
    row.querySelector('[data-field="out"]').textContent = fmt(msg.messages_out_per_s);
    row.querySelector('[data-field="drop"]').textContent = fmt(msg.drops_per_s);
    var listen = row.querySelector('[data-field="listen"]');
    if (listen && msg.listen) listen.textContent = msg.listen;
  }
  var retry = 500;
  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var ws = new WebSocket(scheme + location.host + "/ws/overview/");
    var dot = document.getElementById("live");
    ws.onopen = function () { retry = 500; if (dot) dot.className = "live-dot on"; };
    ws.onmessage = function (event) {
      var msg = JSON.parse(event.data);
      // The poller sends the rows of one poll interval together.
      if (msg.kind === "summaries") msg.rows.forEach(update); else update(msg);
    };
    ws.onclose = function () {
      if (dot) dot.className = "live-dot";
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 5000);
    };
  }
  connect();
})();
