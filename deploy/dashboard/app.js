/*
 * fedmq dashboard — what a fleet is doing, live, from the broker's
 * retained messages (proto/SPEC.md §2):
 *   fedmq/<fleet>/status/+            one per device (§6.3): online, model
 *                                     version, last round, train time, RSS
 *   fedmq/<fleet>/metrics             the last closed round (§6.4)
 *   fedmq/<fleet>/aggregator/status   the aggregator (§6.5)
 * decoded from MessagePack (§3) with @msgpack/msgpack, over MQTT 5 on
 * websockets with MQTT.js, charted with uPlot (vendor/, from npm; nothing
 * is loaded from elsewhere).
 *
 * Identity: a read-only dashboard token (fedmq-keygen token --role
 * dashboard) in the URL fragment, #fleet=F&id=ID&token=T (optional
 * ws=ws://host:port/ to reach another broker). A fragment never goes to
 * the HTTP server, so the token is in no log; the page then moves it to
 * sessionStorage (this tab only) and drops it from the address bar, so it
 * is not in the history, a bookmark or a screenshot. The broker's
 * fedmq_auth plugin lets this identity read the three topics above and
 * publish nothing.
 *
 * Every string from the network goes into the page as text, never as HTML.
 * A message that does not decode, is of the wrong type, or names another
 * device or fleet than its topic is refused and counted.
 *
 * For tests and curious people: window.fedmqDashboard.snapshot() returns
 * what the page shows (test/dashboard_check.js reads it beside the DOM).
 */
(function () {
  'use strict';

  // ------------------------------------------------------------ settings
  var params = new URLSearchParams(location.hash.replace(/^#/, ''));
  var fleet = params.get('fleet') || 'demo';
  var clientId = params.get('id') || 'dashboard-1';
  var wsUrl = params.get('ws') ||
    ((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/mqtt');
  var ID_RE = /^[A-Za-z0-9._-]{1,64}$/;
  var storeKey = 'fedmq-dashboard-token:' + fleet + ':' + clientId;
  var token = params.get('token');
  try {
    if (token) {
      sessionStorage.setItem(storeKey, token);
      params.delete('token');
      history.replaceState(null, '', location.pathname + location.search + '#' + params.toString());
    } else {
      token = sessionStorage.getItem(storeKey);
    }
  } catch (e) {
    /* storage off: keep the token in memory only */
  }

  var MAX_ROUNDS = 10000;
  var prefix = 'fedmq/' + fleet + '/';

  // --------------------------------------------------------------- state
  var state = {
    connected: false,
    connError: '',
    agg: null,            // last aggregator status
    metrics: null,        // last metrics
    devices: new Map(),   // id -> {st, seen}
    rounds: [],           // [{r, acc, tl, ls, pa, co, online, late, rej}], sorted by r
    counted: new Set(),   // rounds already in the totals
    totalRej: 0,
    totalLate: 0,
    refused: 0,
    messages: 0
  };

  // ---------------------------------------------------------------- DOM
  function $(id) { return document.getElementById(id); }
  function setText(id, s) {
    var el = $(id);
    if (el.textContent !== s) el.textContent = s;
  }
  function fmtNum(x, digits) {
    return typeof x === 'number' && isFinite(x) ? x.toFixed(digits) : '–';
  }
  function fmtAge(ms) {
    var s = Math.max(0, ms / 1000);
    if (s < 60) return s.toFixed(0) + ' s ago';
    if (s < 3600) return (s / 60).toFixed(0) + ' min ago';
    if (s < 172800) return (s / 3600).toFixed(1) + ' h ago';
    return (s / 86400).toFixed(0) + ' d ago';
  }
  function isUint(x) { return typeof x === 'number' && x >= 0 && Math.floor(x) === x; }
  function isNum(x) { return typeof x === 'number' && isFinite(x); }

  setText('fleet', fleet);
  document.title = 'fedmq ' + fleet;

  function setConn(cls, text) {
    var el = $('conn');
    el.className = 'conn ' + cls;
    el.textContent = text;
  }

  // -------------------------------------------------------------- charts
  function chartWidth(el) { return Math.max(300, el.clientWidth || 600); }

  // rounds and device counts are whole numbers: no ticks in between
  var WHOLE = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000];
  function roundAxis() {
    return { label: 'round', incrs: WHOLE, values: function (u, ticks) {
      return ticks.map(function (t) { return String(t); });
    } };
  }

  var accEl = $('chart-acc');
  var devEl = $('chart-dev');
  var accChart = new uPlot({
    width: chartWidth(accEl),
    height: 240,
    scales: {
      x: { time: false },
      acc: { auto: true, range: function (u, min, max) {
        return [Math.max(0, Math.floor(min - 2)), Math.min(100, Math.ceil(max + 2))];
      } },
      loss: { auto: true }
    },
    series: [
      { label: 'round' },
      { label: 'test accuracy %', scale: 'acc', stroke: '#1a73e8', width: 2,
        value: function (u, v) { return v == null ? '–' : v.toFixed(2); } },
      { label: 'test loss', scale: 'loss', stroke: '#d93025', width: 2,
        value: function (u, v) { return v == null ? '–' : v.toFixed(4); } },
      { label: 'train loss', scale: 'loss', stroke: '#f29900', width: 1, dash: [5, 4],
        value: function (u, v) { return v == null ? '–' : v.toFixed(4); } }
    ],
    axes: [
      roundAxis(),
      { scale: 'acc', label: 'accuracy %' },
      { scale: 'loss', side: 1, label: 'loss', grid: { show: false } }
    ]
  }, [[], [], [], []], accEl);
  var devChart = new uPlot({
    width: chartWidth(devEl),
    height: 240,
    scales: { x: { time: false }, y: { auto: true, range: function (u, min, max) {
      return [0, Math.max(1, Math.ceil(max * 1.1))];
    } } },
    series: [
      { label: 'round' },
      { label: 'participating', stroke: '#188038', width: 2 },
      { label: 'online', stroke: '#1a73e8', width: 1 },
      { label: 'late', stroke: '#f29900', width: 1 },
      { label: 'rejected', stroke: '#d93025', width: 1 }
    ],
    axes: [roundAxis(), { label: 'devices', incrs: WHOLE }]
  }, [[], [], [], [], []], devEl);

  function updateCharts() {
    var r = state.rounds;
    var x = r.map(function (p) { return p.r; });
    accChart.setData([
      x,
      r.map(function (p) { return isNum(p.acc) ? 100 * p.acc : null; }),
      r.map(function (p) { return isNum(p.tl) ? p.tl : null; }),
      r.map(function (p) { return isNum(p.ls) ? p.ls : null; })
    ]);
    devChart.setData([
      x,
      r.map(function (p) { return p.pa; }),
      r.map(function (p) { return p.online; }),
      r.map(function (p) { return p.late; }),
      r.map(function (p) { return p.rej; })
    ]);
    accEl.dataset.points = String(x.length);
    devEl.dataset.points = String(x.length);
  }

  window.addEventListener('resize', function () {
    accChart.setSize({ width: chartWidth(accEl), height: 240 });
    devChart.setSize({ width: chartWidth(devEl), height: 240 });
  });

  // ------------------------------------------------------------ messages
  function onlineCount() {
    var n = 0;
    state.devices.forEach(function (d) { if (d.st.on) n++; });
    return n;
  }

  function rejSum(rej) {
    var s = 0;
    if (rej && typeof rej === 'object') {
      Object.keys(rej).forEach(function (k) { if (isUint(rej[k])) s += rej[k]; });
    }
    return s;
  }

  // seen: when a live status arrived (a retained copy may be days old,
  // and a last will carries no time of its own)
  function onStatus(id, m, retained) {
    if (m.t !== 'status' || m.dev !== id || m.fl !== fleet || typeof m.on !== 'boolean') {
      return false;
    }
    state.devices.set(id, { st: m, seen: retained ? 0 : Date.now() });
    return true;
  }

  function onMetrics(m) {
    if (m.t !== 'metrics' || m.fl !== fleet || !isUint(m.r) || !isUint(m.pa) || !isUint(m.co) ||
        !isUint(m.late)) {
      return false;
    }
    state.metrics = m;
    var p = {
      r: m.r, acc: m.acc, tl: m.tl, ls: m.ls, pa: m.pa, co: m.co,
      online: onlineCount(), late: m.late, rej: rejSum(m.rej)
    };
    var rs = state.rounds;
    // a new run (the aggregator started over): a new chart
    if (rs.length && m.r < rs[0].r) {
      rs.length = 0;
      state.counted.clear();
    }
    var i = rs.length;
    while (i > 0 && rs[i - 1].r > m.r) i--;
    if (i > 0 && rs[i - 1].r === m.r) rs[i - 1] = p;
    else rs.splice(i, 0, p);
    if (rs.length > MAX_ROUNDS) rs.splice(0, rs.length - MAX_ROUNDS);
    if (!state.counted.has(m.r)) {
      state.counted.add(m.r);
      state.totalRej += p.rej;
      state.totalLate += m.late;
    }
    updateCharts();
    return true;
  }

  function onAgg(m) {
    if (m.t !== 'agg' || m.fl !== fleet || typeof m.on !== 'boolean') return false;
    state.agg = m;
    return true;
  }

  function onMessage(topic, payload, retained) {
    state.messages++;
    if (topic.indexOf(prefix) !== 0) { state.refused++; return; }
    var rest = topic.slice(prefix.length);
    if (payload.length === 0) {         // a retained message cleared
      if (rest.indexOf('status/') === 0) state.devices.delete(rest.slice(7));
      else if (rest === 'metrics') state.metrics = null;
      else if (rest === 'aggregator/status') state.agg = null;
      schedule();
      return;
    }
    var m;
    try {
      m = MessagePack.decode(payload);
    } catch (e) {
      state.refused++;
      return;
    }
    var ok = false;
    if (m && typeof m === 'object' && !Array.isArray(m) && m.v === 1) {
      if (rest.indexOf('status/') === 0 && ID_RE.test(rest.slice(7))) ok = onStatus(rest.slice(7), m, retained);
      else if (rest === 'metrics') ok = onMetrics(m);
      else if (rest === 'aggregator/status') ok = onAgg(m);
    }
    if (!ok) state.refused++;
    schedule();
  }

  // ------------------------------------------------------------- drawing
  var pending = false;
  function schedule() {
    if (pending) return;
    pending = true;
    setTimeout(function () { pending = false; render(); }, 100);
  }

  // the round in progress: the aggregator's word, or the one after the
  // last closed (the aggregator publishes its status when it starts, the
  // metrics at every close)
  function currentRound() {
    var r = 0;
    if (state.agg && isUint(state.agg.r)) r = state.agg.r;
    if (state.metrics && state.metrics.r + 1 > r) r = state.metrics.r + 1;
    return r;
  }

  function flagsByDevice() {
    var f = new Map();
    var fg = state.metrics && Array.isArray(state.metrics.fg) ? state.metrics.fg : [];
    fg.forEach(function (x) {
      if (x && typeof x.dev === 'string' && typeof x.why === 'string') {
        if (!f.has(x.dev)) f.set(x.dev, []);
        f.get(x.dev).push(x.why);
      }
    });
    return f;
  }

  function cell(tr, text, cls) {
    var td = document.createElement('td');
    if (cls) td.className = cls;
    td.textContent = text;
    tr.appendChild(td);
    return td;
  }

  function renderDevices(now) {
    var ids = Array.from(state.devices.keys()).sort();
    var flags = flagsByDevice();
    var lastClosed = state.metrics ? state.metrics.r : -1;
    var tbody = $('devices').tBodies[0];
    var frag = document.createDocumentFragment();
    ids.forEach(function (id) {
      var d = state.devices.get(id);
      var st = d.st;
      var tr = document.createElement('tr');
      tr.dataset.id = id;
      if (!st.on) tr.className = 'offline';
      else if (isUint(st.lr) && st.lr >= lastClosed) tr.className = 'trained';
      cell(tr, id, 'id');
      var on = cell(tr, st.on ? 'yes' : 'no');
      var dot = document.createElement('span');
      dot.className = 'dot ' + (st.on ? 'on' : 'off');
      on.insertBefore(dot, on.firstChild);
      cell(tr, isUint(st.mv) ? String(st.mv) : '–', 'num');
      cell(tr, isUint(st.lr) ? String(st.lr) : '–', 'num');
      var seen = isUint(st.ts) && st.ts > 0 ? st.ts : d.seen;
      cell(tr, seen ? fmtAge(now - seen) : '–', 'num');
      cell(tr, isNum(st.tts) ? st.tts.toFixed(2) : '–', 'num');
      cell(tr, isUint(st.rss) ? (st.rss / 1e6).toFixed(1) : '–', 'num');
      var ftd = cell(tr, '');
      (flags.get(id) || []).forEach(function (why) {
        var s = document.createElement('span');
        s.className = 'flag';
        s.textContent = why;
        ftd.appendChild(s);
      });
      frag.appendChild(tr);
    });
    tbody.replaceChildren(frag);
    $('devices-empty').hidden = ids.length > 0;
  }

  function render() {
    var now = Date.now();
    var m = state.metrics;
    var online = onlineCount();
    var cur = currentRound();
    setText('round', cur ? String(cur) : '–');
    var sub = m ? 'round ' + m.r + ' closed' : 'no round closed yet';
    if (state.agg) sub += ' · aggregator ' + (state.agg.on ? 'online' : 'OFFLINE');
    else sub += ' · no aggregator status';
    setText('round-sub', sub);
    $('round').dataset.closed = m ? String(m.r) : '0';
    $('round').dataset.current = String(cur);
    setText('online', String(online));
    $('online').dataset.count = String(online);
    setText('online-sub', 'of ' + state.devices.size + ' known');
    if (m) {
      setText('participants', m.pa + '/' + m.co);
      setText('participants-sub', 'round ' + m.r + (isNum(m.sec) ? ', ' + m.sec.toFixed(2) + ' s' : ''));
      setText('acc', isNum(m.acc) ? (100 * m.acc).toFixed(2) + ' %' : '–');
      setText('acc-sub', 'test loss ' + fmtNum(m.tl, 4) + ' · train loss ' + fmtNum(m.ls, 4));
      var rej = rejSum(m.rej);
      setText('rejected', String(rej));
      $('rejected').className = 'value' + (rej ? ' bad' : '');
      var reasons = m.rej && typeof m.rej === 'object' ? Object.keys(m.rej).map(function (k) {
        return k + ' ' + m.rej[k];
      }).join(', ') : '';
      setText('rejected-sub', (reasons ? reasons + ' · ' : '') + state.totalRej + ' in ' +
        state.counted.size + ' rounds seen');
      setText('late', String(m.late));
      $('late').className = 'value' + (m.late ? ' warn' : '');
      setText('late-sub', state.totalLate + ' in ' + state.counted.size + ' rounds seen');
    }
    renderDevices(now);
    setText('refused', state.refused ? state.refused + ' messages refused (not a valid status, metrics or aggregator status for this fleet).' : '');
  }
  setInterval(render, 1000); // the "last seen" column ages

  // ---------------------------------------------------------- connection
  window.fedmqDashboard = {
    snapshot: function () {
      return {
        fleet: fleet,
        connected: state.connected,
        error: state.connError,
        round: currentRound(),
        lastClosed: state.metrics ? state.metrics.r : 0,
        online: onlineCount(),
        known: state.devices.size,
        points: state.rounds.length,
        rounds: state.rounds.map(function (p) { return p.r; }),
        accuracy: state.metrics && isNum(state.metrics.acc) ? state.metrics.acc : null,
        rejectedTotal: state.totalRej,
        lateTotal: state.totalLate,
        refused: state.refused,
        messages: state.messages
      };
    },
    // the chart's rounds: [{r, acc, tl, ls, pa, co, online, late, rej}]
    series: function () {
      return state.rounds.map(function (p) { return Object.assign({}, p); });
    }
  };

  if (!token) {
    $('setup').hidden = false;
    setConn('conn-bad', 'no token in the address');
    render();
    return;
  }
  if (!ID_RE.test(fleet) || !ID_RE.test(clientId)) {
    setConn('conn-bad', 'fleet and id must be ids ([A-Za-z0-9._-])');
    return;
  }

  // CONNACK reasons that retrying will not cure
  var FATAL = { 133: 'client id refused', 134: 'bad user name or password', 135: 'not authorised',
    138: 'banned', 140: 'bad authentication method' };

  setConn('conn-wait', 'connecting to ' + wsUrl + '…');
  var client = mqtt.connect(wsUrl, {
    protocolVersion: 5,
    clientId: clientId,
    username: clientId,        // fedmq_auth: none, empty or the client id
    password: token,
    clean: true,
    properties: { sessionExpiryInterval: 0 },
    keepalive: 30,
    reconnectPeriod: 3000,
    connectTimeout: 10000,
    resubscribe: false
  });
  client.on('connect', function () {
    state.connected = true;
    state.connError = '';
    setConn('conn-ok', 'live · ' + clientId);
    // one SUBSCRIBE, in this order, so the devices are known before the
    // retained metrics counts who is online
    client.subscribe([prefix + 'status/+', prefix + 'aggregator/status', prefix + 'metrics'],
      { qos: 1 }, function (err, granted) {
        var bad = (granted || []).filter(function (g) { return g.qos > 2; });
        if (err || bad.length) {
          state.connError = 'subscription refused: ' + (err ? err.message :
            bad.map(function (g) { return g.topic; }).join(', '));
          setConn('conn-bad', state.connError);
        }
      });
  });
  client.on('message', function (topic, payload, packet) {
    onMessage(topic, payload, !!(packet && packet.retain));
  });
  client.on('reconnect', function () { setConn('conn-wait', 'reconnecting…'); });
  client.on('offline', function () {
    state.connected = false;
    if (!state.connError) setConn('conn-wait', 'offline, retrying…');
  });
  client.on('error', function (err) {
    var code = err && err.code;
    state.connected = false;
    if (FATAL[code]) {
      state.connError = 'refused by the broker: ' + FATAL[code] +
        ' (a dashboard token for fleet ' + fleet + ' and id ' + clientId + ', not expired?)';
      setConn('conn-bad', state.connError);
      client.end(true);
    } else {
      state.connError = '';
      setConn('conn-wait', 'error: ' + (err && err.message ? err.message : err) + ', retrying…');
    }
  });
  render();
})();
