// The coordinator's status page: polls ./status.json (coordinator/telemetry/status.ts
// describes it) and draws the nodes, a layers x experts heatmap, the active fraction per
// layer and throughput. Plain browser JavaScript: no framework, no build step, no CDN.
(function () {
  'use strict';
  var params = new URLSearchParams(location.search);
  var intervalMs = Math.max(200, Number(params.get('interval')) || 1000);
  var tpsHistory = [];
  var last = null;
  var metricSel = document.getElementById('metric');
  if (params.get('metric')) metricSel.value = params.get('metric');
  metricSel.addEventListener('change', function () { if (last) drawHeatmap(last); });

  // Viridis stops: dark (low) to bright (high).
  var STOPS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  function color(t) {
    t = Math.min(1, Math.max(0, t));
    var x = t * (STOPS.length - 1), i = Math.min(STOPS.length - 2, Math.floor(x)), f = x - i;
    var a = STOPS[i], b = STOPS[i + 1];
    return 'rgb(' + [0, 1, 2].map(function (k) { return Math.round(a[k] + (b[k] - a[k]) * f); }).join(',') + ')';
  }
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function fmt(x, d) { return x === null || x === undefined ? '–' : Number(x).toFixed(d === undefined ? 2 : d); }
  function pct(x) { return x === null || x === undefined ? '–' : (100 * x).toFixed(1) + '%'; }
  function bytes(b) {
    if (b === null || b === undefined) return '–';
    var u = ['B', 'KiB', 'MiB', 'GiB'], i = 0;
    while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
    return b.toFixed(i ? 1 : 0) + ' ' + u[i];
  }

  function drawKpis(s) {
    document.getElementById('model').textContent = s.model.name + ' · ' + s.model.layers + ' layers × ' + s.model.experts +
      ' experts (top-' + s.model.top_k + ') · experts ' + s.experts_backend;
    document.getElementById('kpi-tps').textContent = fmt(s.throughput.tokens_per_s, 1);
    document.getElementById('kpi-running').textContent = s.queue.running === null ? '–' : s.queue.running;
    var q = (s.queue.waiting || 0) + (s.queue.jobs_waiting || 0);
    document.getElementById('kpi-queue').textContent = s.queue.waiting === null && s.queue.jobs_waiting === null ? '–' : q;
    document.getElementById('kpi-kv').textContent = s.queue.kv_used_bytes === null ? '–'
      : bytes(s.queue.kv_used_bytes) + (s.queue.kv_budget_bytes ? ' / ' + bytes(s.queue.kv_budget_bytes) : '');
    var pq = s.queue.prefix_cache_queried_tokens, ph = s.queue.prefix_cache_hit_tokens;
    document.getElementById('kpi-prefix').textContent = pq === null || pq === undefined ? '–'
      : pct(pq > 0 ? ph / pq : null) + ' of prompt tokens · ' + bytes(s.queue.prefix_cache_bytes || 0) + ' kept' +
        (s.queue.preemptions ? ' · ' + s.queue.preemptions + ' preempted' : '');
    var fr = s.layers.filter(function (l) { return l.active_fraction !== null; });
    var mean = fr.length ? fr.reduce(function (a, l) { return a + l.active_fraction; }, 0) / fr.length : null;
    document.getElementById('kpi-active').textContent = pct(mean);
    var sp = s.speculative;
    document.getElementById('kpi-spec').textContent = !sp ? 'off'
      : sp.proposer + ' · ' + pct(sp.acceptance) + ' kept · ' +
        (sp.tokens_per_forward_pass === null ? '–' : sp.tokens_per_forward_pass.toFixed(2)) + ' tokens/pass';
    document.getElementById('kpi-calls').textContent = s.totals.calls + (s.totals.errors ? ' (' + s.totals.errors + ' failed)' : '');
    tpsHistory.push(s.throughput.tokens_per_s);
    if (tpsHistory.length > 120) tpsHistory.shift();
    var max = Math.max.apply(null, tpsHistory.concat([1e-9]));
    var pts = tpsHistory.map(function (v, i) {
      return (tpsHistory.length < 2 ? 0 : (120 * i) / (tpsHistory.length - 1)).toFixed(1) + ',' + (29 - (28 * v) / max).toFixed(1);
    }).join(' ');
    var svg = document.getElementById('tps-spark');
    svg.innerHTML = '';
    var line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
    line.setAttribute('points', pts);
    svg.appendChild(line);
  }

  // The pair notation of the experts column (core/expert-spec.ts), as its tooltip.
  var SPEC_HELP = document.getElementById('experts-head').getAttribute('title');

  function drawNodes(s) {
    var body = document.querySelector('#nodes tbody');
    body.innerHTML = '';
    if (s.nodes.length === 0) {
      var tr = el('tr');
      tr.appendChild(el('td', { colspan: '9', class: 'muted' }, 'no expert nodes'));
      body.appendChild(tr);
    }
    s.nodes.forEach(function (n) {
      var tr = el('tr', { 'data-node': n.node });
      tr.appendChild(el('td', {}, n.node + (n.address !== n.node ? ' (' + n.address + ')' : '')));
      var st = el('td', { class: n.healthy ? 'up' : 'down', title: n.last_error || '' }, n.healthy ? 'up' : 'DOWN');
      tr.appendChild(st);
      tr.appendChild(el('td', n.experts_spec ? { title: SPEC_HELP } : {}, n.experts_spec || (n.experts_seen !== undefined ? n.experts_seen + ' seen' : '–')));
      tr.appendChild(el('td', {}, String(n.calls || 0)));
      tr.appendChild(el('td', {}, fmt(n.p50_ms, 3)));
      tr.appendChild(el('td', {}, fmt(n.p99_ms, 3)));
      tr.appendChild(el('td', {}, fmt(n.compute_p50_ms, 3)));
      tr.appendChild(el('td', {}, pct(n.active_fraction)));
      tr.appendChild(el('td', {}, String((n.errors || 0) + (n.retries ? ' (' + n.retries + ' retried)' : ''))));
      body.appendChild(tr);
    });
  }

  function drawHeatmap(s) {
    var metric = metricSel.value;
    var isLatency = metric === 'p50_ms' || metric === 'p99_ms';
    var vals = [];
    s.heatmap.forEach(function (row) { row.forEach(function (c) { if (c && c[metric] !== null && c[metric] !== undefined) vals.push(c[metric]); }); });
    var range = colourRange(vals, isLatency);
    var lo = range.lo, hi = range.hi;
    // Latency on a log scale (a slow expert is often 10x, not 10%, slower); fractions linear.
    var scale = function (v) {
      if (range.log) return Math.log(v / lo) / Math.log(hi / lo);
      return (v - lo) / (hi - lo);
    };
    var t = document.getElementById('heatmap');
    t.innerHTML = '';
    var head = el('tr');
    head.appendChild(el('th', {}, 'layer'));
    for (var e = 0; e < s.model.experts; e++) head.appendChild(el('th', {}, 'E' + e));
    t.appendChild(el('thead')).appendChild(head);
    var body = el('tbody');
    t.appendChild(body);
    s.heatmap.forEach(function (row, L) {
      var tr = el('tr', { 'data-layer': String(L) });
      tr.appendChild(el('th', {}, 'L' + L));
      row.forEach(function (c, E) {
        var v = c ? c[metric] : null;
        var td = el('td', { class: 'cell', 'data-layer': String(L), 'data-expert': String(E) });
        if (v === null || v === undefined) {
          td.className = 'cell empty';
          td.title = 'layer ' + L + ', expert ' + E + ': no calls yet';
        } else {
          td.className = 'cell filled';
          td.setAttribute('data-value', String(v));
          td.setAttribute('data-calls', String(c.calls));
          td.style.background = color(scale(v));
          td.style.color = scale(v) > 0.6 ? '#0b0e12' : '#e6e9ee';
          td.textContent = metric === 'active_fraction' || metric === 'share' ? (100 * v).toFixed(0) : v < 10 ? v.toFixed(2) : v.toFixed(0);
          td.title = 'layer ' + L + ', expert ' + E + ': ' + c.calls + ' calls, p50 ' + fmt(c.p50_ms, 3) + ' ms, p99 ' +
            fmt(c.p99_ms, 3) + ' ms, active ' + pct(c.active_fraction) + ', share ' + pct(c.share);
        }
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    var legend = document.getElementById('legend');
    legend.innerHTML = '';
    var unit = isLatency ? ' ms' : '';
    var show = function (v) { return isLatency ? fmt(v, 3) + unit : pct(v); };
    legend.appendChild(el('span', { id: 'legend-lo' }, vals.length ? show(lo) : ''));
    var ramp = el('span', { class: 'ramp' });
    ramp.style.background = 'linear-gradient(to right,' + [0, 0.25, 0.5, 0.75, 1].map(color).join(',') + ')';
    legend.appendChild(ramp);
    legend.appendChild(el('span', { id: 'legend-hi' }, vals.length ? show(hi) : 'no calls yet'));
    if (vals.length) {
      legend.appendChild(el('span', { id: 'legend-note' }, range.log ? '(log scale, at least ' + MIN_LATENCY_RATIO + '× wide)'
        : isLatency ? '(at least ' + MIN_FRACTION_SPAN + ' ms wide)' : '(at least ' + Math.round(100 * MIN_FRACTION_SPAN) + ' points wide)'));
    }
  }

  // The colour scale spans at least this much, centred on the data, so that near-equal values
  // (1.2 vs 1.9 ms, 11% vs 14%) get near-equal colours instead of the two ends of the ramp.
  var MIN_LATENCY_RATIO = 4;
  var MIN_FRACTION_SPAN = 0.25;
  function colourRange(vals, isLatency) {
    if (!vals.length) return { lo: 0, hi: 1, log: false };
    var lo = Math.min.apply(null, vals), hi = Math.max.apply(null, vals);
    if (isLatency && lo > 0) {
      if (hi / lo >= MIN_LATENCY_RATIO) return { lo: lo, hi: hi, log: true };
      var mid = Math.sqrt(lo * hi), half = Math.sqrt(MIN_LATENCY_RATIO);
      return { lo: mid / half, hi: mid * half, log: true };
    }
    if (hi - lo >= MIN_FRACTION_SPAN) return { lo: lo, hi: hi, log: false };
    // Fractions stay within 0..1 (latencies of 0: from 0 up).
    var top = isLatency ? Infinity : 1;
    var from = Math.max(0, Math.min((lo + hi) / 2 - MIN_FRACTION_SPAN / 2, top - MIN_FRACTION_SPAN));
    return { lo: from, hi: from + MIN_FRACTION_SPAN, log: false };
  }

  // Live rebalancing (status.json's `rebalance`, when the coordinator has one): state, and each
  // pair move with its phase (loading on the new node, switching the shard map, unloading the old).
  function drawRebalance(s) {
    var box = document.getElementById('rebalance');
    var r = s.rebalance;
    box.hidden = !r;
    if (!r) return;
    var badge = document.getElementById('rebalance-state');
    badge.textContent = r.state;
    badge.className = 'badge' + (r.state === 'failed' ? ' bad' : r.state === 'done' ? ' ok' : r.state === 'idle' ? '' : ' busy');
    var when = r.started ? 'started ' + new Date(r.started).toLocaleTimeString() : '';
    if (r.finished) when += (when ? ', ' : '') + 'finished ' + new Date(r.finished).toLocaleTimeString();
    document.getElementById('rebalance-when').textContent = when;
    var err = document.getElementById('rebalance-error');
    err.hidden = !r.error;
    err.textContent = r.error || '';
    var moves = r.moves || [];
    var counts = {};
    moves.forEach(function (m) { counts[m.phase] = (counts[m.phase] || 0) + 1; });
    var parts = ['loading', 'switching', 'unloading', 'done', 'failed'].filter(function (p) { return counts[p]; })
      .map(function (p) { return counts[p] + ' ' + p; });
    document.getElementById('rebalance-summary').textContent = moves.length === 0 ? 'no moves'
      : moves.length + ' move' + (moves.length === 1 ? '' : 's') + ': ' + parts.join(', ');
    var body = document.querySelector('#rebalance-moves tbody');
    body.innerHTML = '';
    // Moves in progress first, then failed, then done; in (layer, expert) order within each.
    var rank = { loading: 0, switching: 0, unloading: 0, failed: 1, done: 2 };
    moves.slice().sort(function (a, b) {
      return (rank[a.phase] - rank[b.phase]) || (a.layer - b.layer) || (a.expert - b.expert);
    }).forEach(function (m) {
      var tr = el('tr', { 'data-layer': String(m.layer), 'data-expert': String(m.expert), 'data-phase': m.phase });
      tr.appendChild(el('td', {}, String(m.layer)));
      tr.appendChild(el('td', {}, String(m.expert)));
      var what = m.from === null ? 'new copy on ' + m.to : m.to === null ? 'copy removed from ' + m.from : m.from + ' → ' + m.to;
      tr.appendChild(el('td', {}, what));
      tr.appendChild(el('td', { class: 'phase-' + m.phase }, m.phase));
      body.appendChild(tr);
    });
  }

  function drawLayers(s) {
    var box = document.getElementById('layers');
    box.innerHTML = '';
    // Bars on 0..a round 10% above the largest fraction: ~10% would be a sliver on 0..100%.
    var top = s.layers.reduce(function (m, l) { return Math.max(m, l.active_fraction || 0); }, 0);
    var full = Math.min(1, Math.max(0.1, Math.ceil((top * 1.1) * 10) / 10));
    document.getElementById('layers-scale').textContent = '(bars: 0–' + Math.round(full * 100) + '%)';
    s.layers.forEach(function (l) {
      var row = el('div', { class: 'bar', 'data-layer': String(l.layer) });
      row.appendChild(el('span', {}, 'layer ' + l.layer));
      var track = el('div', { class: 'track' });
      var fill = el('div', { class: 'fill' });
      fill.style.width = (100 * Math.min(1, (l.active_fraction || 0) / full)).toFixed(1) + '%';
      track.appendChild(fill);
      row.appendChild(track);
      row.appendChild(el('span', {}, pct(l.active_fraction)));
      box.appendChild(row);
    });
    var hot = document.getElementById('hottest');
    hot.innerHTML = '';
    s.hottest.forEach(function (h) {
      hot.appendChild(el('li', {}, 'layer ' + h.layer + ' expert ' + h.expert + ' — ' + pct(h.share) + ' of tokens'));
    });
  }

  // With serve --api-key the JSON needs the key: open the page as /#key=KEY (a fragment is never sent or logged).
  var key = (/(?:^#|&)key=([^&]*)/.exec(location.hash) || [])[1];
  var headers = key ? { authorization: 'Bearer ' + decodeURIComponent(key) } : {};

  function tick() {
    fetch('status.json', { cache: 'no-store', headers: headers })
      .then(function (r) {
        if (r.status === 401) throw new Error('the server needs its API key: open this page as /#key=YOUR_KEY');
        if (!r.ok) throw new Error('HTTP ' + r.status);
        return r.json();
      })
      .then(function (s) {
        last = s;
        drawKpis(s);
        drawNodes(s);
        drawHeatmap(s);
        drawLayers(s);
        drawRebalance(s);
        var c = document.getElementById('conn');
        c.textContent = 'live';
        c.className = 'badge ok';
        document.getElementById('updated').textContent = 'updated ' + new Date(s.time).toLocaleTimeString() + ', up ' + s.uptime_s + ' s';
        document.body.setAttribute('data-updates', String(Number(document.body.getAttribute('data-updates') || 0) + 1));
      })
      .catch(function (e) {
        var c = document.getElementById('conn');
        c.textContent = 'disconnected: ' + e.message;
        c.className = 'badge bad';
      })
      .then(function () { setTimeout(tick, intervalMs); });
  }
  tick();
})();
