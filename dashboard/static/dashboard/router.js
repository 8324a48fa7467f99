/* The router page: live stage cards, stage graph, charts (uPlot), peers, packet log, tuning. */
(function () {
  "use strict";

  var cfg = JSON.parse(document.getElementById("page-config").textContent);
  var COLORS = ["#2563eb", "#db2777", "#16a34a", "#ea580c", "#7c3aed", "#0891b2", "#ca8a04", "#dc2626", "#4b5563"];
  var stageNames = cfg.stages.slice();
  var mode = "live";            // "live" or "history"
  var rangeSeconds = null;      // the history range button pressed
  var live = { t: [], s: {} };  // live window: t[], s[stage] = {q: [], thr: []}
  var dirty = false;
  var lastParams = {};
  var pendingChanges = {};      // parameter -> {value, sent (ms)}
  // Visible to tests and curious operators: how many live samples this page has shown.
  var stats = window.gnurouterLive = { samples: 0, lastSample: null };

  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }
  function color(name) {
    var i = stageNames.indexOf(name);
    return COLORS[(i < 0 ? stageNames.length : i) % COLORS.length];
  }
  function fmt(value, digits) {
    if (value === null || value === undefined || value === "") return "–";
    if (typeof value !== "number") return String(value);
    var abs = Math.abs(value);
    if (abs >= 1e6) return (value / 1e6).toFixed(1) + "M";
    if (abs >= 1e4) return (value / 1e3).toFixed(1) + "k";
    if (Number.isInteger(value)) return String(value);
    return value.toFixed(digits === undefined ? 1 : digits);
  }
  function fmtDuration(seconds) {
    if (seconds === null || seconds === undefined) return "?";
    if (seconds < 60) return seconds.toFixed(0) + "s";
    if (seconds < 3600) return Math.floor(seconds / 60) + "m" + Math.floor(seconds % 60) + "s";
    if (seconds < 86400) return Math.floor(seconds / 3600) + "h" + Math.floor((seconds % 3600) / 60) + "m";
    return Math.floor(seconds / 86400) + "d" + Math.floor((seconds % 86400) / 3600) + "h";
  }
  function paramText(value, kind) {
    if (value === null || value === undefined) return "unbounded";
    if (kind === "duration" && typeof value === "number") {
      return value > 0 && value < 1 ? +(value * 1000).toFixed(3) + "ms" : value + "s";
    }
    if (typeof value === "boolean") return value ? "on" : "off";
    return String(value);
  }
  function same(a, b) {
    if (typeof a === "number" && typeof b === "number") return Math.abs(a - b) < 1e-9;
    return a === b;
  }

  /* ---- stage graph (SVG, scales to the page width) ---------------------------- */

  function layers() {
    var incoming = {}, layer = {};
    stageNames.forEach(function (n) { incoming[n] = []; layer[n] = 0; });
    cfg.edges.forEach(function (e) { if (incoming[e[1]]) incoming[e[1]].push(e[0]); });
    for (var pass = 0; pass < stageNames.length; pass++) {
      cfg.edges.forEach(function (e) {
        if (e[0] !== e[1] && layer[e[1]] < layer[e[0]] + 1) layer[e[1]] = layer[e[0]] + 1;
      });
    }
    return layer;
  }

  var graphNodes = {};
  function drawGraph() {
    var layer = layers(), columns = {}, W = 150, H = 64, GAP_X = 46, GAP_Y = 22;
    stageNames.forEach(function (n) { (columns[layer[n]] = columns[layer[n]] || []).push(n); });
    var pos = {}, maxRows = 1, maxLayer = 0;
    Object.keys(columns).forEach(function (l) {
      maxLayer = Math.max(maxLayer, +l);
      maxRows = Math.max(maxRows, columns[l].length);
      columns[l].forEach(function (n, i) { pos[n] = { x: +l * (W + GAP_X) + 4, y: i * (H + GAP_Y) + 4 }; });
    });
    var width = (maxLayer + 1) * (W + GAP_X), height = maxRows * (H + GAP_Y);
    var NS = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(NS, "svg");
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    svg.setAttribute("role", "img");
    var defs = document.createElementNS(NS, "defs");
    defs.innerHTML = '<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" fill="#64748b"/></marker>';
    svg.appendChild(defs);
    cfg.edges.forEach(function (e) {
      var a = pos[e[0]], b = pos[e[1]];
      if (!a || !b) return;
      var line = document.createElementNS(NS, "path");
      var x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2;
      if (x2 <= x1) { x1 = a.x + W / 2; y1 = a.y + H; x2 = b.x + W / 2; y2 = b.y; }
      var mx = (x1 + x2) / 2;
      line.setAttribute("d", "M" + x1 + "," + y1 + " C" + mx + "," + y1 + " " + mx + "," + y2 + " " + (x2 - 2) + "," + y2);
      line.setAttribute("class", "edge");
      line.setAttribute("marker-end", "url(#arrow)");
      svg.appendChild(line);
    });
    stageNames.forEach(function (n) {
      var g = document.createElementNS(NS, "g");
      g.setAttribute("transform", "translate(" + pos[n].x + "," + pos[n].y + ")");
      var rect = document.createElementNS(NS, "rect");
      rect.setAttribute("width", W); rect.setAttribute("height", H); rect.setAttribute("rx", 8);
      rect.setAttribute("class", "node");
      var fill = document.createElementNS(NS, "rect");
      fill.setAttribute("height", 6); fill.setAttribute("y", H - 6); fill.setAttribute("width", 0);
      fill.setAttribute("class", "node-fill");
      var title = document.createElementNS(NS, "text");
      title.setAttribute("x", 10); title.setAttribute("y", 22); title.setAttribute("class", "node-title");
      title.textContent = n;
      var info = document.createElementNS(NS, "text");
      info.setAttribute("x", 10); info.setAttribute("y", 44); info.setAttribute("class", "node-info");
      info.textContent = "…";
      g.appendChild(rect); g.appendChild(fill); g.appendChild(title); g.appendChild(info);
      svg.appendChild(g);
      graphNodes[n] = { rect: rect, fill: fill, info: info, width: W };
    });
    $("graph").innerHTML = "";
    $("graph").appendChild(svg);
  }

  function load(stage) {
    if (!stage.threshold) return 0;
    return Math.min(1, stage.queue_length / stage.threshold);
  }

  function updateGraph(stages) {
    Object.keys(graphNodes).forEach(function (n) {
      var s = stages[n], node = graphNodes[n];
      if (!s) return;
      var ratio = load(s);
      node.fill.setAttribute("width", Math.max(0, ratio * node.width));
      node.rect.setAttribute("class", "node" + (ratio >= 0.9 ? " hot" : ratio >= 0.5 ? " warm" : ""));
      node.info.textContent = "q " + fmt(s.queue_length) + " / " + (s.threshold === null ? "∞" : fmt(s.threshold)) +
        "  " + fmt(s.completions_per_s) + "/s";
    });
  }

  /* ---- stage cards ------------------------------------------------------------------ */

  var cards = {};
  function card(name) {
    if (cards[name]) return cards[name];
    var root = el("article", "stage card");
    root.dataset.stage = name;
    var head = el("header");
    var title = el("h3", null, name);
    var swatch = el("span", "swatch");
    swatch.style.background = color(name);
    title.prepend(swatch);
    var kind = el("span", "badge");
    head.appendChild(title); head.appendChild(kind);
    var bar = el("div", "bar"), fillBar = el("div", "fill");
    bar.appendChild(fillBar);
    var queue = el("div", "queue mono");
    var grid = el("dl", "numbers");
    var fields = {};
    [["threads", "threads"], ["in", "arrivals/s"], ["out", "completions/s"], ["drop", "drops/s"],
     ["p50", "delay p50"], ["p99", "delay p99"]].forEach(function (pair) {
      var dt = el("dt", null, pair[1]), dd = el("dd", "mono");
      dd.dataset.field = pair[0];
      grid.appendChild(dt); grid.appendChild(dd);
      fields[pair[0]] = dd;
    });
    var drops = el("div", "drops small");
    root.appendChild(head); root.appendChild(bar); root.appendChild(queue);
    root.appendChild(grid); root.appendChild(drops);
    $("stages").appendChild(root);
    cards[name] = { root: root, kind: kind, fill: fillBar, queue: queue, fields: fields, drops: drops };
    return cards[name];
  }

  function updateCards(stages) {
    Object.keys(stages).forEach(function (name) {
      var s = stages[name], c = card(name), ratio = load(s);
      c.kind.textContent = s.threshold_kind + (s.blocking ? " · blocking" : "");
      c.fill.style.width = (ratio * 100).toFixed(1) + "%";
      c.fill.className = "fill" + (ratio >= 0.9 ? " hot" : ratio >= 0.5 ? " warm" : "");
      c.queue.textContent = "queue " + s.queue_length + " / " + (s.threshold === null ? "unbounded" : s.threshold) +
        " (peak " + s.peak_queue_length + ")";
      c.root.dataset.queue = s.queue_length;
      c.root.dataset.threshold = s.threshold === null ? "" : s.threshold;
      c.fields.threads.textContent = s.active_threads + " / " + s.threads;
      c.fields["in"].textContent = fmt(s.arrivals_per_s);
      c.fields.out.textContent = fmt(s.completions_per_s);
      c.fields.drop.textContent = fmt(s.drops_per_s);
      c.fields.p50.textContent = fmt(s.queue_delay_ms.p50 || 0, 2) + " ms";
      c.fields.p99.textContent = fmt(s.queue_delay_ms.p99 || 0, 2) + " ms";
      var reasons = [];
      Object.keys(s.drops || {}).sort().forEach(function (reason) {
        var kinds = s.drops[reason], total = 0;
        Object.keys(kinds).forEach(function (k) { total += kinds[k]; });
        var rate = (s.drops_per_s_by_reason || {})[reason];
        reasons.push(reason + " " + fmt(total) + (rate ? " (" + fmt(rate) + "/s)" : ""));
      });
      c.drops.textContent = reasons.length ? "drops: " + reasons.join(" · ") : "no drops";
    });
  }

  /* ---- charts ---------------------------------------------------------------------- */

  var allChart = null, stageCharts = {};
  function chartWidth(node) { return Math.max(260, node.clientWidth || 600); }

  function baseOpts(width, height) {
    return {
      width: width, height: height,
      cursor: { sync: { key: "stages" }, drag: { x: true, y: false } },
      legend: { live: true },
      scales: { x: { time: true } },
      axes: [{}, { size: 56 }],
      hooks: { setSelect: [onZoom] },
    };
  }

  function buildCharts() {
    var allNode = $("chart-all");
    var series = [{}].concat(stageNames.map(function (n) {
      return { label: n, stroke: color(n), width: 1.5, points: { show: false } };
    }));
    var opts = baseOpts(chartWidth(allNode), 260);
    opts.series = series;
    allNode.innerHTML = "";
    allChart = new uPlot(opts, emptyData(stageNames.length), allNode);
    var grid = $("chart-stages");
    grid.innerHTML = "";
    stageCharts = {};
    stageNames.forEach(function (n) {
      var box = el("div", "chart-box");
      box.appendChild(el("h3", null, n));
      var target = el("div", "chart-small");
      target.dataset.stage = n;
      box.appendChild(target);
      grid.appendChild(box);
      var o = baseOpts(chartWidth(target), 150);
      o.series = [{},
        { label: "queue", stroke: color(n), width: 1.5, points: { show: false } },
        { label: "max", stroke: color(n), width: 0.75, dash: [2, 3], points: { show: false } },
        { label: "threshold", stroke: "#dc2626", width: 1, dash: [6, 4], points: { show: false } }];
      o.legend = { live: true };
      stageCharts[n] = new uPlot(o, emptyData(3), target);
    });
  }

  function emptyData(n) {
    var data = [[]];
    for (var i = 0; i < n; i++) data.push([]);
    return data;
  }

  function resizeCharts() {
    if (allChart) allChart.setSize({ width: chartWidth($("chart-all")), height: 260 });
    Object.keys(stageCharts).forEach(function (n) {
      var target = document.querySelector('.chart-small[data-stage="' + n + '"]');
      if (target) stageCharts[n].setSize({ width: chartWidth(target), height: 150 });
    });
  }

  function setChartData(columns) {
    var t = columns.t;
    allChart.setData([t].concat(stageNames.map(function (n) {
      return columns.s[n] ? columns.s[n].q : t.map(function () { return null; });
    })));
    stageNames.forEach(function (n) {
      var s = columns.s[n] || { q: [], qmax: [], thr: [] };
      stageCharts[n].setData([t, s.q, s.qmax || s.q, s.thr]);
    });
  }

  function liveColumns() {
    var s = {};
    stageNames.forEach(function (n) {
      var d = live.s[n] || { q: [], thr: [] };
      s[n] = { q: d.q, qmax: d.q, thr: d.thr };
    });
    return { t: live.t, s: s };
  }

  function appendLive(t, sample) {
    live.t.push(t);
    stageNames.forEach(function (n) {
      var d = live.s[n] = live.s[n] || { q: [], thr: [] };
      while (d.q.length < live.t.length - 1) { d.q.push(null); d.thr.push(null); }
      var s = sample.s[n];
      d.q.push(s ? s.q : null);
      d.thr.push(s ? s.thr : null);
    });
    var cutoff = t - cfg.liveWindow;
    var drop = 0;
    while (drop < live.t.length && live.t[drop] < cutoff) drop++;
    if (drop) {
      live.t.splice(0, drop);
      stageNames.forEach(function (n) { live.s[n].q.splice(0, drop); live.s[n].thr.splice(0, drop); });
    }
  }

  function fillLive(columns) {
    live = { t: columns.t.slice(), s: {} };
    stageNames.forEach(function (n) {
      var s = columns.s[n];
      live.s[n] = s ? { q: s.q.slice(), thr: s.thr.slice() } :
        { q: columns.t.map(function () { return null; }), thr: columns.t.map(function () { return null; }) };
    });
  }

  function render() {
    dirty = false;
    if (mode === "live" && allChart) setChartData(liveColumns());
  }
  function scheduleRender() {
    if (!dirty) { dirty = true; window.requestAnimationFrame(render); }
  }

  function fetchHistory(start, end) {
    var url = cfg.history + "?points=1200" + (start ? "&start=" + start : "") + (end ? "&end=" + end : "");
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error("history: HTTP " + r.status); return r.json(); });
  }

  var historySeq = 0, lastZoom = "";
  function showHistory(start, end) {
    mode = "history";
    var seq = ++historySeq;
    var label = "History " + new Date(start * 1000).toLocaleString() + " – " +
      new Date(end * 1000).toLocaleString() + ". Drag to zoom in; press Live to go back.";
    $("chart-note").textContent = label + " Loading…";
    return fetchHistory(start, end).then(function (columns) {
      if (mode !== "history" || seq !== historySeq) return;  // a newer request won
      setChartData(columns);
      var res = columns.bucket ? columns.bucket + " s buckets (mean queue; dashed: max)" : "every poll";
      $("chart-note").textContent = label + " Resolution: " + res + ".";
    }).catch(function (error) { $("chart-note").textContent = String(error); });
  }

  function onZoom(u) {
    if (u.select.width < 4) return;
    var min = u.posToVal(u.select.left, "x"), max = u.posToVal(u.select.left + u.select.width, "x");
    var key = min.toFixed(2) + ":" + max.toFixed(2);
    if (key === lastZoom) return;  // the charts share one selection: one fetch for all
    lastZoom = key;
    setActiveRange(null);
    showHistory(min, max);
  }

  function setActiveRange(value) {
    document.querySelectorAll("#ranges button").forEach(function (b) {
      b.classList.toggle("active", b.dataset.range === value);
    });
  }

  function goLive() {
    mode = "live";
    lastZoom = "";
    setActiveRange("live");
    $("chart-note").textContent = "Live: last 5 minutes, updated with every poll. Drag across a chart to zoom into history.";
    scheduleRender();
  }

  document.querySelectorAll("#ranges button").forEach(function (button) {
    button.addEventListener("click", function () {
      var range = button.dataset.range;
      if (range === "live") { goLive(); return; }
      setActiveRange(range);
      var end = Date.now() / 1000;
      showHistory(end - Number(range), end);
    });
  });

  /* ---- peers, log, totals, parameters ------------------------------------------- */

  function updatePeers(peers) {
    var body = $("peers").querySelector("tbody");
    body.innerHTML = "";
    $("peer-count").textContent = "(" + peers.length + ")";
    if (!peers.length) {
      var row = el("tr", "empty"), cell = el("td", "muted", "no peers");
      cell.colSpan = 9; row.appendChild(cell); body.appendChild(row);
      return;
    }
    peers.forEach(function (p) {
      var row = el("tr");
      var drops = 0, reasons = [];
      Object.keys(p.drops || {}).forEach(function (k) { drops += p.drops[k]; reasons.push(k + ": " + p.drops[k]); });
      var flow = p.write_paused ? "write paused" : "flowing";
      if (p.state !== "established") flow = p.state + " · " + flow;
      [[p.address, "mono"], [p.user_agent || "?", ""], [p.direction, ""], [fmtDuration(p.uptime), "num"],
       [fmt(p.messages_in), "num"], [fmt(p.messages_out), "num"],
       [p.queued_messages + " / " + fmt(p.queued_bytes) + "B", "num"], [fmt(drops), "num"], [flow, p.write_paused ? "warn" : ""]]
        .forEach(function (pair) { row.appendChild(el("td", pair[1], pair[0])); });
      row.lastChild.previousSibling.title = reasons.join(", ");
      body.appendChild(row);
    });
  }

  function updateLog(lines) {
    var node = $("log");
    var atBottom = node.scrollTop + node.clientHeight >= node.scrollHeight - 4;
    node.textContent = lines.length ? lines.join("\n") : "(empty: start the router with --packet-log FILE to log packets)";
    if (atBottom) node.scrollTop = node.scrollHeight;
  }

  function updateTotals(msg) {
    var t = msg.totals || {};
    $("t-peers").textContent = fmt(t.peers);
    $("t-in").textContent = fmt(t.messages_in_per_s);
    $("t-out").textContent = fmt(t.messages_out_per_s);
    $("t-drop").textContent = fmt(t.drops_per_s);
    $("t-routes").textContent = fmt(t.route_table);
    $("uptime").textContent = fmtDuration(msg.uptime);
    if (msg.listen) $("listen").textContent = msg.listen;
  }

  function setStatus(up, reason) {
    var node = $("status");
    node.textContent = up ? "up" : "down";
    node.className = "status " + (up ? "up" : "down");
    $("down-reason").textContent = up ? "" : (reason || "");
    document.body.classList.toggle("router-down", !up);
  }

  function updateParams(parameters) {
    lastParams = parameters;
    document.querySelectorAll("[data-live-param]").forEach(function (node) {
      var name = node.dataset.liveParam;
      if (!(name in parameters)) return;
      node.textContent = paramText(parameters[name], node.dataset.kind);
      var pending = pendingChanges[name];
      if (pending && same(parameters[name], pending.value)) {
        var ms = Math.round(performance.now() - pending.sent);
        delete pendingChanges[name];
        var form = document.querySelector('form.tune[data-parameter="' + name + '"]');
        if (form) {
          var result = form.querySelector(".result");
          result.textContent += " · live view confirmed after " + ms + " ms";
          result.dataset.confirmedMs = ms;
        }
      }
    });
  }

  function addAudit(entry) {
    var body = $("audit").querySelector("tbody");
    var empty = body.querySelector("tr.empty");
    if (empty) empty.remove();
    var row = el("tr", entry.accepted ? "ok" : "refused");
    var when = entry.time.replace("T", " ").slice(0, 19);
    [[when, "mono"], [entry.user, ""], [entry.parameter, "mono"],
     [JSON.stringify(entry.old) + " → " + JSON.stringify(entry.new), "mono"],
     [entry.accepted ? "applied" : "refused: " + entry.error, ""]]
      .forEach(function (pair) { row.appendChild(el("td", pair[1], pair[0])); });
    body.prepend(row);
  }

  /* ---- tuning forms ------------------------------------------------------------------ */

  document.querySelectorAll("form.tune").forEach(function (form) {
    var unbounded = form.querySelector('input[name="unbounded"]');
    var value = form.querySelector('[name="value"]');
    function sync() { if (unbounded) value.disabled = unbounded.checked; }
    if (unbounded) { unbounded.addEventListener("change", sync); sync(); }
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var result = form.querySelector(".result");
      var token = form.querySelector('input[name="csrfmiddlewaretoken"]').value;
      result.className = "result small";
      result.textContent = "sending…";
      delete result.dataset.confirmedMs;
      var sent = performance.now();
      fetch(form.action, {
        method: "POST", body: new FormData(form), credentials: "same-origin",
        headers: { Accept: "application/json", "X-CSRFToken": token },
      }).then(function (r) {
        return r.json().catch(function () { return { ok: false, message: "HTTP " + r.status }; });
      }).then(function (answer) {
        result.className = "result small " + (answer.ok ? "ok" : "error");
        result.textContent = answer.message || (answer.ok ? "applied" : "refused");
        if (answer.ok) {
          // The live feed may already carry the new value; updateParams confirms either way.
          pendingChanges[answer.parameter] = { value: answer["new"], sent: sent };
          updateParams(lastParams);
        }
      }).catch(function (error) {
        result.className = "result small error";
        result.textContent = String(error);
      });
    });
  });

  /* ---- the live feed ----------------------------------------------------------------- */

  var retry = 500;
  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var ws = new WebSocket(scheme + location.host + cfg.ws);
    ws.onopen = function () { retry = 500; document.body.classList.remove("feed-lost"); };
    ws.onmessage = function (event) {
      var msg = JSON.parse(event.data);
      if (msg.kind === "sample") {
        setStatus(true);
        var names = Object.keys(msg.stages);
        var added = names.filter(function (n) { return stageNames.indexOf(n) < 0; });
        if (added.length) { stageNames = stageNames.concat(added); drawGraph(); buildCharts(); }
        updateTotals(msg);
        updateCards(msg.stages);
        updateGraph(msg.stages);
        updateParams(msg.parameters || {});
        if (msg.peers) updatePeers(msg.peers);
        if (msg.log) updateLog(msg.log);
        appendLive(msg.t, msg.sample);
        scheduleRender();
        stats.samples += 1;
        stats.lastSample = msg.t;
      } else if (msg.kind === "status") {
        setStatus(msg.up, msg.error);
      } else if (msg.kind === "audit") {
        addAudit(msg);
      }
    };
    ws.onclose = function () {
      document.body.classList.add("feed-lost");
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 5000);
    };
  }

  drawGraph();
  buildCharts();
  setStatus(cfg.up);
  if (window.ResizeObserver) new ResizeObserver(resizeCharts).observe($("chart-all"));
  fetchHistory(null, null).then(function (columns) {
    var fresh = live.t.length ? live : null;
    fillLive(columns);
    if (fresh) { /* samples that arrived while loading are newer: keep them */
      for (var i = 0; i < fresh.t.length; i++) {
        if (!live.t.length || fresh.t[i] > live.t[live.t.length - 1]) {
          var sample = { s: {} };
          stageNames.forEach(function (n) { sample.s[n] = { q: fresh.s[n].q[i], thr: fresh.s[n].thr[i] }; });
          appendLive(fresh.t[i], sample);
        }
      }
    }
    scheduleRender();
  }).catch(function () {});
  connect();
})();
