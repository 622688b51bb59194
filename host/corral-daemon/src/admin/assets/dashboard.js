// Corral's dashboard: polls GET /status once a second and keeps the page in step.
//
// Why polling rather than server-sent events: the page needs a fresh snapshot of every
// counter each second anyway (rates are differences of counters over time), and every
// change it must show — a swap, a termination, a failed load — is in that snapshot, so
// it shows within a second without a stream to keep open. EventSource cannot send the
// bearer header; a poll is a plain fetch that can, survives a daemon restart without
// reconnection logic, and holds no connection or thread on the daemon between polls.
// The registry's events (loads, swaps, unloads, failed loads) come with each snapshot
// (the daemon keeps the last few), so two swaps between polls are both listed.
//
// Everything a plugin or a message can influence (names, reasons, errors, emitted
// messages) is inserted with textContent, never as markup; the page's CSP forbids
// inline script besides.

'use strict';

(() => {
  const POLL_MS = 1000;
  const HISTORY_S = 300; // the charts' span: five minutes
  const SMOOTH_POINTS = 5; // rates shown as numbers average the last five polls
  const MAX_EVENTS = 100;
  const TOKEN_KEY = 'corral-admin-token';

  const $ = (id) => document.getElementById(id);

  let token = sessionStorage.getItem(TOKEN_KEY);
  let timer = null;
  let inFlight = false;
  let again = false;
  let waitingForToken = false;
  let startedAt = null;
  let lastEventSeq = 0;
  const cards = new Map();
  const daemonHistory = { t: [], received: [] };

  class Unauthorized extends Error {}

  // ---- talking to the daemon ----

  async function api(method, path, body) {
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const response = await fetch(path, {
      method,
      headers,
      body,
      cache: 'no-store',
      credentials: 'omit',
      redirect: 'error',
    });
    if (response.status === 401) {
      const refused = token !== null;
      forgetToken();
      askForToken(refused ? 'That token was refused.' : '');
      throw new Unauthorized('unauthorized');
    }
    const text = await response.text();
    let json = null;
    try {
      json = JSON.parse(text);
    } catch (_) {
      json = null;
    }
    return { status: response.status, ok: response.ok, json, text };
  }

  function schedule(delay) {
    clearTimeout(timer);
    timer = setTimeout(poll, delay);
  }

  async function poll() {
    if (waitingForToken) return;
    if (inFlight) {
      again = true;
      return;
    }
    inFlight = true;
    clearTimeout(timer);
    try {
      const r = await api('GET', '/status');
      if (!r.ok || !r.json) throw new Error((r.json && r.json.error) || `HTTP ${r.status}`);
      render(r.json);
      connection(true);
    } catch (e) {
      if (e instanceof Unauthorized) return;
      connection(false, e.message);
    } finally {
      inFlight = false;
    }
    if (waitingForToken) return;
    if (again) {
      again = false;
      schedule(0);
    } else {
      schedule(POLL_MS);
    }
  }

  function connection(up, why) {
    const el = $('connection');
    document.body.classList.toggle('stale', !up);
    el.className = `connection num ${up ? 'live' : 'down'}`;
    el.textContent = up ? `live · ${clock(Date.now() * 1e6)}` : `cannot reach the daemon (${why}); retrying`;
  }

  // ---- the token ----

  function forgetToken() {
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    $('forget-token').hidden = true;
  }

  function askForToken(error) {
    waitingForToken = true;
    clearTimeout(timer);
    $('login').hidden = false;
    $('login-error').textContent = error;
    $('token').focus();
    connection(false, 'waiting for the admin token');
  }

  $('login-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const input = $('token');
    const given = input.value.trim();
    if (!given) {
      $('login-error').textContent = 'Enter the token the daemon was started with.';
      return;
    }
    input.value = '';
    token = given;
    sessionStorage.setItem(TOKEN_KEY, token);
    $('forget-token').hidden = false;
    $('login').hidden = true;
    waitingForToken = false;
    poll();
  });

  $('forget-token').addEventListener('click', () => {
    forgetToken();
    poll();
  });
  $('forget-token').hidden = token === null;

  // ---- the reload button ----

  $('reload').addEventListener('click', async () => {
    const button = $('reload');
    const note = $('reload-result');
    button.disabled = true;
    note.className = 'note';
    note.textContent = 'reloading…';
    try {
      const r = await api('PUT', '/plugins/reload');
      if (r.ok) {
        note.textContent = `reloaded at ${clock(Date.now() * 1e6)}`;
      } else {
        note.className = 'note error';
        note.textContent = `reload refused (${r.status}): ${(r.json && r.json.error) || r.text}`;
      }
    } catch (e) {
      note.className = 'note error';
      note.textContent = e instanceof Unauthorized ? 'reload needs the token' : `reload failed: ${e.message}`;
    } finally {
      button.disabled = false;
    }
    poll();
  });

  // ---- formatting ----

  const counts = new Intl.NumberFormat('en-US');
  const pad = (n) => String(n).padStart(2, '0');

  function clock(ns) {
    const d = new Date(ns / 1e6);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  // `20:01:02` today, `2026-11-30 20:01` before.
  function when(ns, nowSeconds) {
    const d = new Date(ns / 1e6);
    const today = new Date(nowSeconds * 1e3);
    if (d.toDateString() === today.toDateString()) return clock(ns);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }

  function duration(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    const days = Math.floor(s / 86400);
    const hms = `${pad(Math.floor((s % 86400) / 3600))}:${pad(Math.floor((s % 3600) / 60))}:${pad(s % 60)}`;
    return days > 0 ? `${days}d ${hms}` : hms;
  }

  // `short`: as few digits as an axis label needs.
  function nanos(ns, short) {
    if (ns === null || ns === undefined) return '–';
    const digits = (v, d) => (short ? String(Number(v.toPrecision(2))) : v.toFixed(d));
    if (ns === 0) return short ? '0' : '0 ns';
    if (ns < 1e3) return `${digits(ns, 0)} ns`;
    if (ns < 1e6) return `${digits(ns / 1e3, 1)} µs`;
    if (ns < 1e9) return `${digits(ns / 1e6, 2)} ms`;
    return `${digits(ns / 1e9, 2)} s`;
  }

  // `20:01` for a chart's time axis (seconds since the epoch).
  function minutes(t) {
    const d = new Date(t * 1e3);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }

  function bytes(n) {
    if (n === null || n === undefined) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    let v = n;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i += 1;
    }
    return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
  }

  function si(n) {
    if (n === null || n === undefined) return '–';
    const steps = [[1e12, 'T'], [1e9, 'G'], [1e6, 'M'], [1e3, 'k']];
    for (const [size, unit] of steps) {
      if (n >= size) return `${(n / size).toFixed(n >= size * 100 ? 0 : 1)} ${unit}`;
    }
    return String(n);
  }

  function rate(r) {
    if (r === null || r === undefined || Number.isNaN(r)) return '–';
    return r >= 1000 ? si(Math.round(r)) : r.toFixed(r >= 100 ? 0 : 1);
  }

  // `corral:plugin/batch-filter@0.1.0` → `batch-filter`
  function shortWorld(world) {
    const m = /\/([^@]+)@/.exec(world || '');
    return m ? m[1] : world || '';
  }

  function setText(el, text) {
    const value = String(text);
    if (el.textContent !== value) el.textContent = value;
  }

  function mean(values) {
    const seen = values.filter((v) => v !== null && v !== undefined);
    return seen.length ? seen.reduce((a, b) => a + b, 0) / seen.length : null;
  }

  function trim(history, now) {
    let drop = 0;
    while (drop < history.t.length && history.t[drop] < now - HISTORY_S) drop += 1;
    if (drop > 0) for (const key of Object.keys(history)) history[key].splice(0, drop);
  }

  // ---- rendering ----

  function render(status) {
    const now = status.now_ns / 1e9;
    if (startedAt !== status.started_at_ns) {
      // A new daemon (or the first answer): its events are numbered afresh.
      startedAt = status.started_at_ns;
      lastEventSeq = 0;
      daemonHistory.t.length = 0;
      daemonHistory.received.length = 0;
    }
    renderDaemon(status, now);
    renderPlugins(status, now);
    renderEvents(status.events || []);
    // For the browser tests: how many polls the page has shown.
    document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
  }

  function renderDaemon(status, now) {
    setText($('d-uptime'), duration(now - status.started_at_ns / 1e9));
    const received = status.log ? status.log.end : 0;
    daemonHistory.t.push(now);
    daemonHistory.received.push(received);
    trim(daemonHistory, now);
    const n = daemonHistory.t.length;
    const from = Math.max(0, n - 1 - SMOOTH_POINTS);
    const span = daemonHistory.t[n - 1] - daemonHistory.t[from];
    const intake = span > 0 ? (daemonHistory.received[n - 1] - daemonHistory.received[from]) / span : null;
    setText($('d-intake'), `${rate(intake)} msgs/s`);
    setText($('d-received'), counts.format(received));
    setText($('d-unmatched'), 'unmatched' in status ? counts.format(status.unmatched) : '–');
    setText($('d-output-behind'), status.output ? counts.format(status.output.lag.messages) : '–');
    const log = $('d-log');
    log.parentElement.hidden = !status.log;
    if (status.log) setText(log, `${bytes(status.log.unread_bytes)} / ${bytes(status.log.max_bytes)}`);
    const states = { running: 0, terminated: 0, 'failed-to-load': 0 };
    for (const p of status.plugins) states[p.state] = (states[p.state] || 0) + 1;
    setText(
      $('d-plugins'),
      `${states.running} up · ${states.terminated} terminated · ${states['failed-to-load']} failed`,
    );
    const c = status.compiles || {};
    for (const source of ['memo', 'cache', 'compiled', 'baseline']) {
      setText($(`d-${source}`), source in c ? counts.format(c[source]) : '–');
    }
    $('empty').hidden = status.plugins.length > 0;
  }

  function renderPlugins(status, now) {
    const container = $('plugins');
    const present = new Set();
    let previous = null;
    for (const p of status.plugins) {
      present.add(p.name);
      let card = cards.get(p.name);
      if (!card) {
        card = makeCard(p.name);
        cards.set(p.name, card);
      }
      // Insert new cards in name order; never move a card that is in place (moving
      // it would take the focus from its form).
      const expected = previous ? previous.nextElementSibling : container.firstElementChild;
      if (expected !== card.el) {
        container.insertBefore(card.el, expected);
      }
      if (!card.chart) makeChart(card);
      updateCard(card, p, status, now);
      previous = card.el;
    }
    for (const [name, card] of cards) {
      if (!present.has(name)) {
        if (card.chart) card.chart.destroy();
        if (card.resize) card.resize.disconnect();
        card.el.remove();
        cards.delete(name);
      }
    }
  }

  function makeCard(name) {
    const el = $('plugin-card').content.firstElementChild.cloneNode(true);
    el.dataset.plugin = name;
    const q = (selector) => el.querySelector(selector);
    const card = {
      el,
      name,
      state: null,
      prev: null,
      now: Date.now() / 1e3,
      history: { t: [], rate: [], ms: [] },
      chart: null,
      f: {
        name: q('.name'),
        state: q('.state'),
        world: q('.world'),
        tier: q('.tier'),
        version: q('.version'),
        loaded: q('.loaded'),
        reason: q('.reason'),
        reasonTitle: q('.reason-title'),
        reasonText: q('.reason-text'),
        warning: q('.warning'),
        warningText: q('.warning-text'),
        stats: q('.stats'),
        rate: q('.rate'),
        failures: q('.failures'),
        avg: q('.avg'),
        max: q('.max'),
        queue: q('.queue'),
        rejected: q('.rejected'),
        lag: q('.lag'),
        memory: q('.memory'),
        memoryFill: q('.memory-fill'),
        memoryPeak: q('.memory-peak'),
        fuel: q('.fuel'),
        fuelFill: q('.fuel-fill'),
        chart: q('.chart'),
        try: q('.try'),
        tryForm: q('.try-form'),
        tryInput: q('.try-input'),
        trySend: q('.try-send'),
        tryResult: q('.try-result'),
      },
    };
    card.f.name.textContent = name;
    card.f.tryInput.value = JSON.stringify({ type: 'dashboard.test', logger: 'dashboard', payload: 'hello' });
    card.f.tryForm.addEventListener('submit', (event) => {
      event.preventDefault();
      sendTestMessage(card);
    });
    return card;
  }

  function makeChart(card) {
    if (typeof window.uPlot !== 'function') return;
    const box = card.f.chart;
    const width = box.clientWidth;
    if (width === 0) return;
    const axis = {
      stroke: '#5d6677',
      font: '10px system-ui, sans-serif',
      size: 34,
      ticks: { show: false },
      grid: { stroke: '#eceef2', width: 1 },
    };
    card.chart = new window.uPlot(
      {
        width,
        height: 120,
        legend: { show: true, live: false },
        cursor: { show: false },
        padding: [6, 4, 0, 0],
        scales: {
          x: { time: true, range: () => [card.now - HISTORY_S, card.now] },
          rate: { range: (u, min, max) => [0, Math.max(1, max || 0) * 1.1] },
          ms: { range: (u, min, max) => [0, Math.max(0.01, max || 0) * 1.1] },
        },
        axes: [
          { ...axis, size: 22, space: 60, values: (u, ticks) => ticks.map((t) => minutes(t)) },
          { ...axis, scale: 'rate', values: (u, ticks) => ticks.map((v) => rate(v)) },
          { ...axis, scale: 'ms', side: 1, size: 48, grid: { show: false }, values: (u, ticks) => ticks.map((v) => nanos(v * 1e6, true)) },
        ],
        series: [
          {},
          { label: 'msgs/s', scale: 'rate', stroke: '#1f6f5c', fill: 'rgba(31,111,92,0.12)', width: 1.5, points: { show: false } },
          { label: 'mean call', scale: 'ms', stroke: '#c0620b', width: 1.5, spanGaps: true, points: { show: false } },
        ],
      },
      [[], [], []],
      box,
    );
    card.resize = new ResizeObserver(() => {
      const w = box.clientWidth;
      if (w > 0 && card.chart && w !== card.chart.width) card.chart.setSize({ width: w, height: 120 });
    });
    card.resize.observe(box);
  }

  function updateCard(card, p, status, now) {
    const f = card.f;
    const loaded = typeof p.version === 'string';
    card.el.className = `card ${p.state}`;
    setText(f.state, p.state === 'failed-to-load' ? 'failed to load' : p.state);
    setText(f.world, loaded ? shortWorld(p.world) : '');
    f.world.title = p.world || '';
    setText(f.tier, loaded ? p.tier : '');
    f.tier.className = `tier ${p.tier || ''}`;
    f.tier.title = p.tier === 'baseline' ? 'serving from baseline (Winch) code while the optimised code compiles' : '';
    setText(f.version, loaded ? p.version.slice(0, 12) : '');
    f.version.title = loaded ? `SHA-256 ${p.version}` : '';
    // An absolute time: a relative one would change the line's length every second.
    setText(f.loaded, p.loaded_at_ns ? `loaded ${when(p.loaded_at_ns, now)}` : '');
    f.loaded.title = p.loaded_at_ns ? new Date(p.loaded_at_ns / 1e6).toISOString() : '';

    // The reason, in full: a termination's, or the load failure of a name that never loaded.
    const reason = p.state === 'terminated' ? p.reason : p.state === 'failed-to-load' ? p.load_error : null;
    f.reason.hidden = reason === null || reason === undefined;
    setText(f.reasonTitle, p.state === 'terminated' ? 'Terminated:' : 'Failed to load:');
    setText(f.reasonText, reason || '');
    // A failed load of a new version while an older one keeps serving.
    const warning = loaded && p.load_error ? p.load_error : null;
    f.warning.hidden = warning === null;
    setText(f.warningText, warning || '');
    f.stats.hidden = !loaded;
    f.chart.hidden = !loaded;
    f.try.hidden = !loaded;
    if (p.state === 'terminated' && card.state === 'running') {
      addEvent({ kind: 'terminated', name: p.name, at_ns: status.now_ns, error: p.reason });
    }
    card.state = p.state;
    if (!loaded) return;

    const stats = p.stats;
    const pm = stats.process_message;
    const te = stats.timer_event;
    const timed = pm.timed + te.timed;
    const total = pm.total_duration_ns + te.total_duration_ns;
    let msgRate = null;
    let ms = null;
    const prev = card.prev;
    if (prev && now > prev.t) {
      const swapped = prev.version !== p.version;
      // A new version's counters start at zero.
      const calls = swapped ? pm.calls : pm.calls - prev.calls;
      msgRate = calls / (now - prev.t);
      const dTimed = swapped ? timed : timed - prev.timed;
      const dTotal = swapped ? total : total - prev.total;
      ms = dTimed > 0 ? dTotal / dTimed / 1e6 : null;
    }
    card.prev = { t: now, version: p.version, calls: pm.calls, timed, total };
    const h = card.history;
    h.t.push(now);
    h.rate.push(msgRate);
    h.ms.push(ms);
    trim(h, now);
    card.now = now;

    setText(f.rate, rate(mean(h.rate.slice(-SMOOTH_POINTS))));
    setText(f.failures, counts.format(pm.failures + te.failures));
    f.failures.title = `process-message ${pm.failures}, timer-event ${te.failures}; last: ${stats.last_error || 'none'}`;
    setText(f.avg, nanos(timed > 0 ? total / timed : null));
    setText(f.max, nanos(Math.max(pm.max_duration_ns, te.max_duration_ns)));
    setText(f.queue, p.reader ? counts.format(p.reader.processed) : '–');
    setText(f.rejected, p.reader ? counts.format(p.reader.skipped) : '–');
    // A reader's lag is messages behind the log; a decoder's is bytes behind its input's files.
    const files = p.input && Array.isArray(p.input.files) ? p.input.files : null;
    f.lag.parentElement.hidden = p.lag === undefined && files === null;
    if (p.lag !== undefined) {
        setText(f.lag, p.lag === null ? '–' : counts.format(p.lag.messages));
    } else if (files !== null) {
        setText(f.lag, bytes(files.reduce((n, file) => n + (file.behind_bytes || 0), 0)));
        f.lag.title = `bytes behind the end of the ${files.length} file(s) its input follows`;
    }

    const limits = p.limits || {};
    bar(f.memoryFill, stats.memory_bytes, limits.memory_bytes);
    const peak = limits.memory_bytes ? Math.min(100, (100 * stats.peak_memory_bytes) / limits.memory_bytes) : 0;
    f.memoryPeak.style.left = `calc(${peak}% - 1px)`;
    setText(f.memory, `${bytes(stats.memory_bytes)} · peak ${bytes(stats.peak_memory_bytes)} / ${bytes(limits.memory_bytes)}`);
    bar(f.fuelFill, stats.max_fuel_used, limits.fuel);
    setText(f.fuel, `${si(stats.max_fuel_used)} / ${si(limits.fuel)}`);

    if (card.chart) card.chart.setData([h.t, h.rate, h.ms]);
  }

  function bar(fill, value, limit) {
    const share = limit ? Math.min(100, (100 * value) / limit) : 0;
    fill.style.width = `${share}%`;
    fill.classList.toggle('high', share >= 90);
  }

  // ---- the test message ----

  async function sendTestMessage(card) {
    const f = card.f;
    f.trySend.disabled = true;
    f.tryResult.replaceChildren(line('note', 'sending…'));
    try {
      const r = await api('POST', `/plugins/${encodeURIComponent(card.name)}/call`, f.tryInput.value);
      if (r.ok && r.json) {
        const emitted = r.json.emitted || [];
        const parts = [line('ok', emitted.length === 0 ? 'emitted nothing' : `emitted ${emitted.length} message${emitted.length === 1 ? '' : 's'}:`)];
        for (const message of emitted) {
          const pre = document.createElement('pre');
          pre.className = 'emitted';
          pre.textContent = JSON.stringify(message, null, 2);
          parts.push(pre);
        }
        f.tryResult.replaceChildren(...parts);
      } else {
        const pre = document.createElement('pre');
        pre.className = 'refusal';
        pre.textContent = (r.json && r.json.error) || r.text;
        f.tryResult.replaceChildren(line('refused', `refused (${r.status}):`), pre);
      }
    } catch (e) {
      f.tryResult.replaceChildren(line('refused', e instanceof Unauthorized ? 'the call needs the token' : `cannot call: ${e.message}`));
    } finally {
      f.trySend.disabled = false;
    }
    poll();
  }

  function line(className, text) {
    const p = document.createElement('p');
    p.className = className;
    p.textContent = text;
    return p;
  }

  // ---- events ----

  function renderEvents(events) {
    for (const event of events) {
      if (event.seq > lastEventSeq) {
        lastEventSeq = event.seq;
        addEvent(event);
      }
    }
  }

  function addEvent(event) {
    const list = $('events');
    const li = document.createElement('li');
    li.className = `event ${event.kind}`;
    const time = document.createElement('time');
    time.textContent = clock(event.at_ns);
    const kind = document.createElement('span');
    kind.className = `kind ${event.kind}`;
    kind.textContent = event.kind;
    const who = document.createElement('span');
    who.className = 'who';
    who.textContent = event.name;
    let detail = '';
    if (event.kind === 'replaced') {
      detail = `${(event.old_version || '').slice(0, 12)} → ${(event.version || '').slice(0, 12)}, ${event.state}`;
    } else if (event.kind === 'loaded' || event.kind === 'unloaded') {
      detail = (event.version || '').slice(0, 12);
    } else {
      detail = event.error || '';
    }
    li.append(time, kind, who, document.createTextNode(detail));
    list.prepend(li);
    while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
  }

  // The script is deferred: the document is parsed, and uPlot (deferred before it) loaded.
  poll();
})();
