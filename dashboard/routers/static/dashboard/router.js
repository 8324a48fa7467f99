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
  // The graph the router reports about itself (dashboard/routers/stagegraph.py, for_page):
  //   {reported, stages: [{name, description, stream, classes, express}],
  //    links: [{from, to, paths, events: {path: [names]}}],     stage -> stage
  //    inputs: {stage: [{source, description, paths, events}]}}  outside sources -> stage
  // Drawn in layers, left to right (top to bottom when the page is narrow): a stage sits one
  // layer after the furthest stage that feeds it.  A link that skips layers runs through a
  // free slot of each layer between (one slot per source stage), so it never crosses a stage.

  var NS = "http://www.w3.org/2000/svg";
  var NODE_W = 192, NODE_H = 74, PAD = 6;
  var graph = cfg.graph;
  var graphKey = JSON.stringify(graph);
  var graphNodes = {};
  var graphVertical = null;
  var lastStages = null;

  function svgEl(tag, cls, attrs) {
    var node = document.createElementNS(NS, tag);
    if (cls) node.setAttribute("class", cls);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    return node;
  }
  function svgTitle(parent, text) {
    var title = document.createElementNS(NS, "title");
    title.textContent = text;
    parent.appendChild(title);
  }
  function stageInfo(name) {
    for (var i = 0; i < graph.stages.length; i++) {
      if (graph.stages[i].name === name) return graph.stages[i];
    }
    return null;
  }
  function eventsText(events) {
    return Object.keys(events).map(function (path) {
      return path + ": " + events[path].join(", ");
    }).join("\n");
  }
  /** Layers, slots and hops: the drawing without coordinates. */
  function layoutGraph() {
    var names = stageNames.slice(), index = {}, layer = {};
    names.forEach(function (n, i) { index[n] = i; layer[n] = 0; });
    var links = graph.links.filter(function (l) { return l.from in index && l.to in index; });
    var forward = links.filter(function (l) { return l.from !== l.to; });
    for (var pass = 0; pass < names.length; pass++) {  // longest path; a cycle stops growing
      var changed = false;
      forward.forEach(function (l) {
        var want = layer[l.from] + 1;
        if (layer[l.to] < want && want < names.length) { layer[l.to] = want; changed = true; }
      });
      if (!changed) break;
    }
    if (!links.length) names.forEach(function (n, i) { layer[n] = i; });  // stage names only: a row

    var items = {}, columns = [];
    function item(id, l, dummy) {
      if (!items[id]) {
        items[id] = { id: id, layer: l, dummy: dummy, order: Object.keys(items).length, prev: [], next: [] };
        (columns[l] = columns[l] || []).push(items[id]);
      }
      return items[id];
    }
    names.forEach(function (n) { item(n, layer[n], false); });
    function hop(a, b) {
      if (a.next.indexOf(b) < 0) a.next.push(b);
      if (b.prev.indexOf(a) < 0) b.prev.push(a);
    }
    var chains = links.map(function (l) {
      var chain = [items[l.from]];
      if (layer[l.to] > layer[l.from]) {
        for (var k = layer[l.from] + 1; k < layer[l.to]; k++) {
          chain.push(item(l.from + "\u0000" + k, k, true));  // shared by the links of l.from
        }
        chain.push(items[l.to]);
        for (var i = 1; i < chain.length; i++) hop(chain[i - 1], chain[i]);
        return { link: l, chain: chain, back: false };
      }
      return { link: l, chain: [items[l.from], items[l.to]], back: true };
    });

    // Order each layer by where its feeders sit (stages before pass-through slots).
    var rows = 0;
    for (var l = 0; l < columns.length; l++) {
      var column = columns[l] = columns[l] || [];
      column.forEach(function (it, i) {
        var feeders = it.prev.filter(function (p) { return p.layer === l - 1; });
        it.bary = feeders.length
          ? feeders.reduce(function (sum, p) { return sum + p.row; }, 0) / feeders.length
          : i;
      });
      column.sort(function (a, b) {
        return a.bary - b.bary || (a.dummy ? 1 : 0) - (b.dummy ? 1 : 0) || a.order - b.order;
      });
      column.forEach(function (it, i) { it.row = i; });
      rows = Math.max(rows, column.length);
    }
    return { items: items, columns: columns, chains: chains, rows: rows, layers: columns.length };
  }

  function wantVertical(layout) {
    return $("graph").clientWidth < 600 && layout.layers > layout.rows;
  }

  function drawGraph() {
    var layout = layoutGraph();
    var vertical = graphVertical = wantVertical(layout);
    // Abstract coordinates: u along the layers, v across them; xy() maps them to the page.
    var A = vertical ? NODE_H : NODE_W, C = vertical ? NODE_W : NODE_H;
    var GAP_A = vertical ? 44 : 58, GAP_C = vertical ? 22 : 24;
    function xy(u, v) { return vertical ? v + "," + u : u + "," + v; }
    function u0(it) { return PAD + it.layer * (A + GAP_A); }
    function v0(it) { return PAD + it.row * (C + GAP_C); }
    // Where hops leave and enter a stage: spread over its side, in the order of the other end.
    function spread(it, others) {
      var sorted = others.slice().sort(function (a, b) { return a.row - b.row || a.order - b.order; });
      var at = {};
      sorted.forEach(function (o, i) {
        at[o.id] = it.dummy ? v0(it) + C / 2 : v0(it) + C * (i + 1) / (sorted.length + 1);
      });
      return at;
    }
    Object.keys(layout.items).forEach(function (id) {
      var it = layout.items[id];
      it.outAt = spread(it, it.next);
      it.inAt = spread(it, it.prev);
    });

    var width = PAD * 2 + layout.layers * A + Math.max(0, layout.layers - 1) * GAP_A;
    var height = PAD * 2 + layout.rows * C + Math.max(0, layout.rows - 1) * GAP_C;
    var svg = svgEl("svg", null, {
      viewBox: "0 0 " + (vertical ? height : width) + " " + (vertical ? width : height),
      role: "img",
      "aria-label": "stage graph",
    });
    var defs = svgEl("defs");
    var marker = svgEl("marker", null, {
      id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7,
      orient: "auto-start-reverse",
    });
    marker.appendChild(svgEl("path", "arrow-head", { d: "M0,0L10,5L0,10z" }));
    defs.appendChild(marker);
    svg.appendChild(defs);

    layout.chains.forEach(function (c) {
      var l = c.link, d;
      if (c.back) {  // a cycle: out of the far side, around, into the near side
        var a = c.chain[0], b = c.chain[1], ua = u0(a) + A, va = v0(a) + C / 2, ub = u0(b), vb = v0(b) + C / 2;
        var bow = Math.max(va, vb) + C / 2 + GAP_C / 2;
        d = "M" + xy(ua, va) + " C" + xy(ua + GAP_A, bow) + " " + xy(ub - GAP_A, bow) + " " + xy(ub - 1, vb);
      } else {
        var first = c.chain[0];
        d = "M" + xy(u0(first) + A, first.outAt[c.chain[1].id]);
        for (var i = 1; i < c.chain.length; i++) {
          var p = c.chain[i - 1], q = c.chain[i];
          var u1 = u0(p) + A, v1 = p.outAt[q.id], u2 = u0(q), v2 = q.inAt[p.id], um = (u1 + u2) / 2;
          if (i > 1) d += " L" + xy(u1, v1);  // through a pass-through slot
          var end = i === c.chain.length - 1 ? u2 - 1 : u2;
          d += " C" + xy(um, v1) + " " + xy(um, v2) + " " + xy(end, v2);
        }
      }
      var refusable = l.paths.indexOf("enqueue") >= 0;
      var g = svgEl("g", "link", { "data-from": l.from, "data-to": l.to });
      g.appendChild(svgEl("path", "edge-hit", { d: d }));
      g.appendChild(svgEl("path", "edge" + (refusable ? "" : " housekeeping"), {
        d: d, "marker-end": "url(#arrow)",
      }));
      svgTitle(g, l.from + " → " + l.to + "\n" + eventsText(l.events));
      svg.appendChild(g);
    });

    graphNodes = {};
    var fits = [];
    stageNames.forEach(function (n) {
      var it = layout.items[n], info = stageInfo(n) || {};
      var x = vertical ? v0(it) : u0(it), y = vertical ? u0(it) : v0(it);
      var g = svgEl("g", "stage-node", { transform: "translate(" + x + "," + y + ")", "data-stage": n });
      var rect = svgEl("rect", "node", { width: NODE_W, height: NODE_H, rx: 8 });
      var fill = svgEl("rect", "node-fill", { height: 6, y: NODE_H - 6, width: 0 });
      var title = svgEl("text", "node-title", { x: 10, y: 21 });
      title.textContent = n;
      var numbers = svgEl("text", "node-info", { x: 10, y: 41 });
      numbers.textContent = "…";
      g.appendChild(rect); g.appendChild(fill); g.appendChild(title); g.appendChild(numbers);
      var tip = [n + (info.description ? ": " + info.description : "")];
      if (info.stream) {
        var tag = svgEl("text", "node-tag", { x: NODE_W - 9, y: 20 });
        tag.textContent = "stream";
        g.appendChild(tag);
        tip.push("stream stage: never refuses, pushes back on the sockets instead");
      }
      if (info.classes && info.classes.length > 1) tip.push("classes: " + info.classes.join(", "));
      if (info.express && info.express.length) tip.push("express: " + info.express.join(", "));
      svgTitle(g, tip.join("\n"));
      var feeds = (graph.inputs || {})[n] || [];
      if (feeds.length) {
        var inputs = svgEl("text", "node-inputs", { x: 10, y: 59 }), label = svgEl("tspan");
        inputs.appendChild(label);
        fits.push({ node: label, names: feeds.map(function (f) { return f.source; }) });
        svgTitle(inputs, "from outside the stages:\n" + feeds.map(function (f) {
          return f.source + (f.description ? " (" + f.description + ")" : "") + "\n  " +
            eventsText(f.events).replace(/\n/g, "\n  ");
        }).join("\n"));
        g.appendChild(inputs);
      }
      svg.appendChild(g);
      graphNodes[n] = { rect: rect, fill: fill, info: numbers };
    });

    var box = $("graph");
    box.innerHTML = "";
    box.classList.toggle("vertical", vertical);
    if (stageNames.length) box.appendChild(svg);
    // Outside sources: as many as fit on the node's last line (all of them in its tooltip).
    fits.forEach(function (f) {
      for (var shown = f.names.length; shown >= 1; shown--) {
        var more = f.names.length - shown;
        f.node.textContent = "⇠ " + f.names.slice(0, shown).join(" · ") + (more ? " +" + more : "");
        if (shown === 1 || f.node.getComputedTextLength() <= NODE_W - 18) break;
      }
    });
    var legend = el("p", "graph-legend small muted");
    if (!graph.reported) {
      legend.textContent = stageNames.length
        ? "This router does not report its stage graph (an older version): its stages only."
        : "Waiting for the router's first report…";
    } else {
      legend.appendChild(el("span", "key"));
      legend.appendChild(document.createTextNode(" may be refused (enqueue) "));
      legend.appendChild(el("span", "key housekeeping"));
      legend.appendChild(document.createTextNode(" never refused (housekeeping) · ⇠ fed from outside the stages · hover for the events"));
    }
    box.appendChild(legend);
  }

  function setGraph(next) {
    var key = JSON.stringify(next);
    if (key === graphKey) return;
    graph = next; graphKey = key;
    var added = next.stages.map(function (s) { return s.name; })
      .filter(function (n) { return stageNames.indexOf(n) < 0; });
    if (added.length) { stageNames = stageNames.concat(added); buildCharts(); }
    drawGraph();
    if (lastStages) updateGraph(lastStages);
  }

  function relayoutGraph() {
    if (graphVertical !== null && wantVertical(layoutGraph()) !== graphVertical) {
      drawGraph();
      if (lastStages) updateGraph(lastStages);
    }
  }

  function load(stage) {
    if (!stage.threshold) return 0;
    return Math.min(1, stage.queue_length / stage.threshold);
  }

  function updateGraph(stages) {
    lastStages = stages;
    Object.keys(graphNodes).forEach(function (n) {
      var s = stages[n], node = graphNodes[n];
      if (!s) return;
      var ratio = load(s);
      node.fill.setAttribute("width", Math.max(0, ratio * NODE_W));
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
    var desc = el("div", "desc small muted");
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
    root.appendChild(head); root.appendChild(desc); root.appendChild(bar); root.appendChild(queue);
    root.appendChild(grid); root.appendChild(drops);
    $("stages").appendChild(root);
    cards[name] = { root: root, kind: kind, desc: desc, fill: fillBar, queue: queue, fields: fields, drops: drops };
    return cards[name];
  }

  function updateCards(stages) {
    Object.keys(stages).forEach(function (name) {
      var s = stages[name], c = card(name), ratio = load(s);
      c.kind.textContent = s.threshold_kind + (s.blocking ? " · blocking" : "");
      var info = stageInfo(name);
      c.desc.textContent = info && info.description ? info.description : "";
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
      // Hops-Flow we asked of it while overloaded, and what it asked of us.
      if (p.hops_flow_sent != null) flow += " · asked Hops-Flow " + p.hops_flow_sent;
      if (p.hops_flow != null) flow += " · its Hops-Flow " + p.hops_flow;
      [[p.address, "mono"], [p.user_agent || "?", ""], [p.direction, ""], [fmtDuration(p.uptime), "num"],
       [fmt(p.messages_in), "num"], [fmt(p.messages_out), "num"],
       [p.queued_messages + " / " + fmt(p.queued_bytes) + "B", "num"], [fmt(drops), "num"], [flow, p.write_paused || p.hops_flow_sent != null ? "warn" : ""]]
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
        if (msg.graph) setGraph(msg.graph);
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
  if (window.ResizeObserver) {
    new ResizeObserver(resizeCharts).observe($("chart-all"));
    new ResizeObserver(relayoutGraph).observe($("graph"));
  }
  fetchHistory(null, null).then(function (columns) {
    var fresh = live.t.length ? live : null;
    fillLive(columns);
    if (fresh) { /* samples that arrived while loading are newer: keep them */
      for (var i = 0; i < fresh.t.length; i++) {
        if (!live.t.length || fresh.t[i] > live.t[live.t.length - 1]) {
          var sample = { s: {} };
          stageNames.forEach(function (n) {
            if (fresh.s[n]) sample.s[n] = { q: fresh.s[n].q[i], thr: fresh.s[n].thr[i] };
          });
          appendLive(fresh.t[i], sample);
        }
      }
    }
    scheduleRender();
  }).catch(function () {});
  connect();
})();
