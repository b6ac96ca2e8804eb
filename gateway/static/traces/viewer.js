// The gateway's trace viewer: lists the recent traces kept in memory and draws one as a waterfall.
//
// Plain ES2020, no framework, no build step. The page's CSP forbids inline scripts and styles, so
// every element is built here with createElement/textContent (span names and attribute values are
// caller data: they never go through innerHTML), and sizes are set through element.style (CSSOM).
'use strict';

(() => {
  // viewer.js is served at <base>/debug/traces/static/viewer.js and the API at
  // <base>/debug/traces/api/: resolving against this script's own URL works behind a path prefix
  // and whatever the page's URL looks like (with or without a trailing slash).
  const SCRIPT_URL = document.currentScript ? document.currentScript.src : location.href;
  const VIEWER_ROOT = new URL('../', SCRIPT_URL);
  const API = new URL('api/traces', VIEWER_ROOT);
  const GRAPHIQL = new URL('../../graphql', VIEWER_ROOT);
  const REFRESH_MS = 2000;
  const REQUEST_TIMEOUT_MS = 8000;
  const TRACE_ID = /[0-9a-f]{32}/i;
  const INDENT_PX = 14;

  const $ = (id) => document.getElementById(id);
  const ui = {
    openForm: $('open-form'),
    openId: $('open-id'),
    openError: $('open-error'),
    auto: $('auto-refresh'),
    refresh: $('refresh'),
    filters: $('filters'),
    minMs: $('filter-min-ms'),
    model: $('filter-model'),
    failed: $('filter-failed'),
    clear: $('filter-clear'),
    listStatus: $('list-status'),
    listAnnounce: $('list-announce'),
    listAlert: $('list-alert'),
    rows: $('trace-rows'),
    listEmpty: $('list-empty'),
    detail: $('detail'),
    detailEmpty: $('detail-empty'),
    detailBody: $('detail-body'),
    traceTitle: $('trace-title'),
    traceStatus: $('trace-status'),
    traceFacts: $('trace-facts'),
    ticks: $('ruler-ticks'),
    waterfall: $('waterfall-rows'),
    spanDetails: $('span-details'),
  };

  const state = {
    traces: [], // the last list received
    loaded: false, // a list has been received at least once
    listKey: '', // what the rows show: ids, span counts and statuses
    lastUpdate: null,
    seen: new Set(), // trace ids already listed (new ones flash once)
    models: new Set(), // every model seen in a list, for the model filter
    listSeq: 0,
    listAbort: null,
    timer: 0,
    openId: null, // the trace shown on the right
    trace: null, // its detail, once loaded
    detailSeq: 0,
    nodes: new Map(), // spanId -> {span, children, parent, depth}
    order: [], // the nodes in tree order
    collapsed: new Set(),
    selectedSpan: null,
    t0: 0,
    total: 1,
    step: 1, // between two ruler ticks, in ms
  };

  // --- DOM and formatting helpers ----------------------------------------------------------

  function h(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'className') node.className = value;
      else if (key === 'text') node.textContent = value;
      else if (key === 'dataset') Object.assign(node.dataset, value);
      else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // replaceChildren() would turn a null or an array into text: flatten and drop the gaps first.
  function fill(node, ...children) {
    node.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
    return node;
  }

  function formatDuration(ms) {
    if (!Number.isFinite(ms)) return '–';
    if (ms < 1) return `${Math.round(ms * 1000)} µs`;
    if (ms < 10) return `${ms.toFixed(2)} ms`;
    if (ms < 100) return `${ms.toFixed(1)} ms`;
    if (ms < 1000) return `${Math.round(ms)} ms`;
    return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  }

  // A ruler label: "0", "500 µs", "1 ms", "2.5 ms" (no trailing zeros).
  function formatTick(ms) {
    if (ms === 0) return '0';
    return formatDuration(ms).replace(/\.(\d*?)0+ /, '.$1 ').replace('. ', ' ');
  }

  const pad = (n, width = 2) => String(n).padStart(width, '0');

  function formatClock(unixMs) {
    const d = new Date(unixMs);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  }

  function formatDateTime(unixMs) {
    const d = new Date(unixMs);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${formatClock(unixMs)}`;
  }

  function formatAgo(unixMs) {
    const s = Math.max(0, (Date.now() - unixMs) / 1000);
    if (s < 2) return 'just now';
    if (s < 60) return `${Math.floor(s)} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return `${Math.floor(s / 86400)} d ago`;
  }

  // The operation span of an operation without a name is called just "query" (or "mutation").
  function anonymous(name) {
    return /^(query|mutation|subscription)$/.test(name || '');
  }

  function statusBadge(status, code) {
    const kind = status === 'ERROR' ? 'error' : status === 'OK' ? 'ok' : 'unset';
    return h('span', { className: `badge badge-${kind}`, title: code ? `${status}: ${code}` : status },
      status === 'ERROR' ? '✕ ERROR' : status === 'OK' ? '✓ OK' : status);
  }

  function visuallyHidden(text) {
    return h('span', { className: 'visually-hidden', text });
  }

  // --- API ---------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  // An API key with the admin scope, given once in the address as #key=... (kept for the tab,
  // never sent anywhere but this gateway); a loopback gateway needs none.
  const keyMatch = /(?:^#|&)key=([^&]+)/.exec(window.location.hash);
  if (keyMatch) {
    sessionStorage.setItem('gateway-trace-key', decodeURIComponent(keyMatch[1]));
    history.replaceState(null, '', window.location.pathname + window.location.search);
  }
  const apiKey = sessionStorage.getItem('gateway-trace-key');

  async function getJSON(url, signal) {
    let response;
    const headers = { Accept: 'application/json' };
    if (apiKey) headers['X-API-Key'] = apiKey;
    try {
      response = await fetch(url, { headers, cache: 'no-store', signal });
    } catch (err) {
      if (err && err.name === 'AbortError') throw err;
      throw new ApiError(`the gateway did not answer (${err && err.message ? err.message : err})`, 0);
    }
    let body = null;
    try {
      body = await response.json();
    } catch (err) {
      if (response.ok) throw new ApiError('the gateway sent a response that is not JSON', response.status);
    }
    if (!response.ok) {
      const detail = body && typeof body.error === 'string' ? `: ${body.error}` : '';
      throw new ApiError(`HTTP ${response.status}${detail}`, response.status);
    }
    return body;
  }

  function withTimeout(controller) {
    const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
    return () => clearTimeout(timer);
  }

  // --- Filters -----------------------------------------------------------------------------

  function readFilters() {
    const raw = ui.minMs.value.trim();
    const minMs = raw === '' ? 0 : Number(raw);
    const validMin = Number.isFinite(minMs) && minMs >= 0;
    ui.minMs.setAttribute('aria-invalid', String(!validMin));
    return { minMs: validMin ? minMs : 0, failed: ui.failed.checked, model: ui.model.value };
  }

  function filtersActive(f) {
    return f.minMs > 0 || f.failed || f.model !== '';
  }

  function listUrl(f) {
    const url = new URL(API);
    if (f.minMs > 0) url.searchParams.set('min_ms', String(f.minMs));
    if (f.failed) url.searchParams.set('failed', '1');
    if (f.model) url.searchParams.set('model', f.model);
    return url;
  }

  function updateModelOptions(traces) {
    const before = state.models.size;
    for (const t of traces) for (const m of t.models || []) state.models.add(m);
    if (state.models.size === before && ui.model.options.length > 1) return;
    const current = ui.model.value;
    const names = [...state.models].sort();
    if (current && !state.models.has(current)) names.push(current);
    fill(ui.model,
      h('option', { value: '', text: 'All models' }),
      ...names.map((name) => h('option', { value: name, text: name })),
    );
    ui.model.value = current;
  }

  let minMsDebounce = 0;
  function onFiltersChanged(delay = 0) {
    clearTimeout(minMsDebounce);
    minMsDebounce = setTimeout(() => loadList(), delay);
    ui.clear.hidden = !filtersActive(readFilters());
  }

  // --- Trace list --------------------------------------------------------------------------

  function schedule() {
    clearTimeout(state.timer);
    if (!ui.auto.checked) return;
    state.timer = setTimeout(() => {
      if (document.hidden) schedule();
      else loadList();
    }, REFRESH_MS);
  }

  async function loadList() {
    clearTimeout(state.timer);
    const seq = ++state.listSeq;
    if (state.listAbort) state.listAbort.abort();
    const controller = new AbortController();
    state.listAbort = controller;
    const done = withTimeout(controller);
    const filters = readFilters();
    ui.refresh.classList.add('is-busy');
    try {
      const body = await getJSON(listUrl(filters), controller.signal);
      if (seq !== state.listSeq) return;
      const traces = Array.isArray(body && body.traces) ? body.traces : [];
      state.lastUpdate = Date.now();
      showListError(null);
      renderList(traces, filters);
    } catch (err) {
      if (seq !== state.listSeq) return; // superseded by a newer request
      showListError(err && err.name === 'AbortError'
        ? new ApiError(`no answer within ${REQUEST_TIMEOUT_MS / 1000} s`, 0) : err);
    } finally {
      done();
      if (seq === state.listSeq) {
        ui.refresh.classList.remove('is-busy');
        schedule();
      }
    }
  }

  function showListError(err) {
    if (!err) {
      ui.listAlert.hidden = true;
      fill(ui.listAlert);
      ui.listStatus.classList.remove('is-stale');
      return;
    }
    const retry = ui.auto.checked ? `Retrying every ${REFRESH_MS / 1000} s.` : 'Press Refresh to try again.';
    const hint = err.status === 404
      ? ' Is the gateway still running with GATEWAY_TRACE_VIEWER=true?' : '';
    const text = `${err.message || err}.${hint} ${retry}`;
    // The alert is announced whenever it changes: not again on every failed retry.
    if (ui.listAlert.hidden || ui.listAlert.dataset.text !== text) {
      fill(ui.listAlert, h('strong', { text: 'Cannot load the traces: ' }), text);
      ui.listAlert.dataset.text = text;
      ui.listAlert.hidden = false;
    }
    if (state.loaded) {
      ui.listStatus.textContent = `stale · last update ${formatClock(state.lastUpdate)}`;
      ui.listStatus.classList.add('is-stale');
    } else {
      ui.listStatus.textContent = '';
      ui.listEmpty.hidden = true;
    }
  }

  function renderList(traces, filters) {
    updateModelOptions(traces);
    const count = `${traces.length} trace${traces.length === 1 ? '' : 's'}${filtersActive(filters) ? ' match' : ''}`;
    ui.listStatus.textContent = `${count} · updated ${formatClock(state.lastUpdate)}`;
    if (ui.listAnnounce.textContent !== count) ui.listAnnounce.textContent = count;

    // Nothing new (the usual auto-refresh): keep the rows, so that focus, hover and a text
    // selection survive; only the "… ago" texts move on.
    const key = `${filtersActive(filters)}|${traces.map((t) => `${t.traceId}:${t.spanCount}:${t.status}`).join(',')}`;
    if (state.loaded && key === state.listKey) {
      for (const [i, row] of [...ui.rows.rows].entries()) {
        const ago = row.querySelector('.ago');
        if (ago && traces[i]) ago.textContent = formatAgo(traces[i].startTime);
        row.classList.remove('is-new');
      }
      return;
    }
    state.listKey = key;
    const focusedId = ui.rows.contains(document.activeElement)
      ? document.activeElement.closest('tr')?.dataset.traceId : null;
    const maxDuration = Math.max(1e-9, ...traces.map((t) => t.durationMs || 0));
    const rows = traces.map((t) => traceRow(t, maxDuration));
    fill(ui.rows, ...rows);
    for (const t of traces) state.seen.add(t.traceId);
    state.traces = traces;
    state.loaded = true;

    if (focusedId) {
      const link = ui.rows.querySelector(`tr[data-trace-id="${CSS.escape(focusedId)}"] a`);
      if (link) link.focus({ preventScroll: true });
    }

    renderListEmpty(traces.length === 0, filters);

    // A trace can grow after it is listed (a late batch span): reload the open one if so.
    const open = state.openId && traces.find((t) => t.traceId === state.openId);
    if (open && state.trace && state.trace.traceId === open.traceId
        && open.spanCount !== state.trace.spans.length) {
      openTrace(open.traceId, { quiet: true });
    }
  }

  function renderListEmpty(empty, filters) {
    ui.listEmpty.hidden = !empty;
    if (!empty) return;
    if (filtersActive(filters)) {
      fill(ui.listEmpty,
        h('p', { className: 'empty-title', text: 'No traces match these filters' }),
        h('p', {}, h('button', { type: 'button', className: 'btn', text: 'Clear filters', onclick: clearFilters })),
      );
    } else {
      fill(ui.listEmpty,
        h('p', { className: 'empty-title', text: 'No traces yet — send a query' }),
        h('p', {}, 'Send a GraphQL operation to the gateway (for example from ',
          h('a', { href: GRAPHIQL.href, text: 'GraphiQL' }), ') and its trace shows up here.'),
      );
    }
  }

  function traceRow(t, maxDuration) {
    const isError = t.status === 'ERROR';
    const name = t.name || '(unnamed operation)';
    const isNew = state.loaded && !state.seen.has(t.traceId);
    const durBar = h('span', { className: 'dur-bar', 'aria-hidden': 'true' });
    durBar.style.width = `${Math.max(2, Math.round((t.durationMs / maxDuration) * 100))}%`;
    const models = t.models || [];
    const row = h('tr', {
      className: [isError && 'is-error', isNew && 'is-new'].filter(Boolean).join(' ') || null,
      dataset: { traceId: t.traceId },
      'aria-current': t.traceId === state.openId ? 'true' : null,
    },
    h('td', { title: `${name}\ntrace ${t.traceId}` },
      h('a', { className: 'op-link', href: `#${t.traceId}` },
        name, anonymous(name) ? h('span', { className: 'muted', text: ' (anonymous)' }) : null),
      h('span', { className: 'op-id', text: t.traceId })),
    h('td', { className: 'mono', title: formatDateTime(t.startTime) },
      formatClock(t.startTime), h('span', { className: 'op-id ago', text: formatAgo(t.startTime) })),
    h('td', { className: 'num' }, h('span', { className: 'dur', text: formatDuration(t.durationMs) }), durBar),
    h('td', { title: t.errorCode ? `${t.status}: ${t.errorCode}` : t.status },
      statusBadge(t.status, t.errorCode),
      t.errorCode ? h('span', { className: 'op-id badge-code', text: t.errorCode }) : null),
    h('td', { title: models.join(', ') },
      models.length ? models.map((m) => h('span', { className: 'chip', text: m })) : h('span', { className: 'muted', text: '—' })),
    h('td', { className: 'num mono', text: String(t.spanCount) }));
    return row;
  }

  function markOpenRow() {
    for (const row of ui.rows.rows) {
      if (row.dataset.traceId === state.openId) row.setAttribute('aria-current', 'true');
      else row.removeAttribute('aria-current');
    }
  }

  function clearFilters() {
    ui.minMs.value = '';
    ui.failed.checked = false;
    ui.model.value = '';
    onFiltersChanged();
  }

  // --- Navigation (the URL hash is #<traceId> or #<traceId>/<spanId>) ----------------------

  function parseHash() {
    let hash = location.hash.slice(1);
    try {
      hash = decodeURIComponent(hash);
    } catch (err) {
      // A malformed %-escape: use the hash as it is; it then fails the trace id check below.
    }
    const [traceId = '', spanId = ''] = hash.trim().split('/');
    return { traceId: traceId.toLowerCase(), spanId: spanId.toLowerCase() || null };
  }

  function navigate(traceId, spanId = null) {
    const target = spanId ? `#${traceId}/${spanId}` : `#${traceId}`;
    if (location.hash === target) onHashChange();
    else location.hash = target;
  }

  function onHashChange() {
    const { traceId, spanId } = parseHash();
    if (!traceId) return;
    if (!/^[0-9a-f]{32}$/.test(traceId)) {
      showDetailError('Not a trace id', [h('code', { text: traceId }), ' is not a trace id: a trace id has 32 hexadecimal digits.']);
      return;
    }
    if (state.trace && state.trace.traceId === traceId) {
      if (spanId && state.nodes.has(spanId)) selectSpan(spanId, { focus: false });
      return;
    }
    openTrace(traceId, { spanId });
  }

  // --- Trace detail ------------------------------------------------------------------------

  async function openTrace(traceId, { spanId = null, quiet = false } = {}) {
    const seq = ++state.detailSeq;
    const switching = !state.trace || state.trace.traceId !== traceId;
    state.openId = traceId;
    markOpenRow();
    if (switching && !quiet) showDetailMessage('Loading trace…', traceId);
    const controller = new AbortController();
    const done = withTimeout(controller);
    try {
      const trace = await getJSON(new URL(`api/traces/${encodeURIComponent(traceId)}`, VIEWER_ROOT), controller.signal);
      if (seq !== state.detailSeq) return;
      if (switching) {
        state.collapsed.clear();
        state.selectedSpan = null;
      }
      renderTrace(trace, spanId);
    } catch (err) {
      if (seq !== state.detailSeq || quiet) return;
      const id = h('code', { text: traceId });
      if (err && err.status === 404) {
        showDetailError('Trace not found', ['Trace ', id, ' is not in the store. The gateway keeps only the newest '
          + 'traces (GATEWAY_TRACE_VIEWER_SIZE): it may have been evicted, or its request has not finished yet.'],
        traceId);
      } else {
        const message = err && err.name === 'AbortError' ? `no answer within ${REQUEST_TIMEOUT_MS / 1000} s` : (err.message || err);
        showDetailError('Cannot load the trace', ['Trace ', id, `: ${message}.`], traceId);
      }
    } finally {
      done();
    }
  }

  function labelDetail(id) {
    ui.detail.setAttribute('aria-labelledby', id);
  }

  function showDetailMessage(text) {
    state.trace = null;
    labelDetail('detail-title');
    ui.detailBody.hidden = true;
    ui.detailEmpty.hidden = false;
    fill(ui.detailEmpty, h('h2', { id: 'detail-title', className: 'pane-title', text }));
  }

  function showDetailError(title, text, traceId = null) {
    state.trace = null;
    labelDetail('detail-title');
    state.nodes = new Map();
    ui.detailBody.hidden = true;
    ui.detailEmpty.hidden = false;
    fill(ui.detailEmpty,
      h('h2', { id: 'detail-title', className: 'pane-title', text: title }),
      h('p', { role: 'alert' }, text),
      traceId ? h('p', {}, h('button', {
        type: 'button', className: 'btn', text: 'Try again', onclick: () => openTrace(traceId),
      })) : null,
    );
  }

  function buildTree(spans) {
    const nodes = new Map(spans.map((span) => [span.spanId, { span, children: [], parent: null, depth: 0 }]));
    const roots = [];
    for (const node of nodes.values()) {
      const parent = node.span.parentSpanId ? nodes.get(node.span.parentSpanId) : null;
      if (parent && parent !== node) {
        parent.children.push(node);
        node.parent = parent;
      } else {
        roots.push(node);
      }
    }
    // Depth-first, children in start order (spans arrive sorted by start time). A parent cycle
    // would leave nodes unreachable from any root: they are appended as roots instead.
    const order = [];
    const visited = new Set();
    const walk = (start) => {
      const stack = [[start, 0]];
      while (stack.length) {
        const [node, depth] = stack.pop();
        if (visited.has(node)) continue;
        visited.add(node);
        node.depth = depth;
        order.push(node);
        for (let i = node.children.length - 1; i >= 0; i -= 1) stack.push([node.children[i], depth + 1]);
      }
    };
    roots.forEach(walk);
    for (const node of nodes.values()) {
      if (!visited.has(node)) {
        node.parent = null;
        walk(node);
      }
    }
    return { nodes, order };
  }

  function renderTrace(trace, spanId) {
    const spans = Array.isArray(trace.spans) ? trace.spans : [];
    state.trace = trace;
    const { nodes, order } = buildTree(spans);
    state.nodes = nodes;
    state.order = order;
    const starts = spans.map((s) => s.startTime);
    const ends = spans.map((s) => s.startTime + Math.max(0, s.durationMs || 0));
    state.t0 = spans.length ? Math.min(...starts) : trace.startTime;
    state.total = Math.max(1e-6, (spans.length ? Math.max(...ends) : trace.startTime + trace.durationMs) - state.t0);

    document.title = `${trace.name || 'Trace'} · Traces`;
    ui.detailEmpty.hidden = true;
    ui.detailBody.hidden = false;
    labelDetail('trace-title');
    fill(ui.traceTitle, trace.name || '(unnamed operation)',
      anonymous(trace.name) ? h('span', { className: 'muted', text: ' (anonymous)' }) : null);
    ui.traceTitle.title = trace.name || '';
    fill(ui.traceStatus,
      statusBadge(trace.status, trace.errorCode),
      trace.errorCode ? h('span', { className: 'badge badge-error badge-code', text: trace.errorCode }) : null,
    );
    const fact = (label, ...value) => h('div', {}, h('dt', { text: label }), h('dd', {}, ...value));
    fill(ui.traceFacts,
      fact('Trace id', trace.traceId, copyButton(trace.traceId)),
      fact('Started', formatDateTime(trace.startTime)),
      fact('Duration', formatDuration(trace.durationMs)),
      fact('Spans', String(spans.length)),
      fact('Models', (trace.models || []).join(', ') || '—'),
    );
    renderRuler();

    let selected = spanId && nodes.has(spanId) ? spanId : null;
    if (!selected && state.selectedSpan && nodes.has(state.selectedSpan)) selected = state.selectedSpan;
    if (!selected) selected = defaultSpan(order);
    state.selectedSpan = selected;
    renderRows();
    if (selected) selectSpan(selected, { focus: false, updateHash: false, scroll: true });
    else fill(ui.spanDetails);
  }

  // The span to show first: where an error started (the deepest failed span), else the root.
  function defaultSpan(order) {
    let best = null;
    for (const node of order) {
      if (node.span.status === 'ERROR' && (!best || node.depth > best.depth)) best = node;
    }
    return (best || order[0] || { span: {} }).span.spanId || null;
  }

  function copyButton(text) {
    if (!navigator.clipboard) return null;
    const button = h('button', {
      type: 'button', className: 'btn btn-quiet btn-small copy', text: 'Copy', 'aria-label': 'Copy the trace id',
    });
    button.addEventListener('click', () => {
      navigator.clipboard.writeText(text).then(
        () => { button.textContent = 'Copied'; },
        () => { button.textContent = 'Copy failed'; },
      ).finally(() => setTimeout(() => { button.textContent = 'Copy'; }, 1500));
    });
    return button;
  }

  // Round tick steps (1, 2 or 5 × 10^n ms), about five of them across the trace.
  function tickStep(total) {
    const raw = total / 5;
    const magnitude = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw);
    return step || raw;
  }

  function renderRuler() {
    state.step = tickStep(state.total);
    const ticks = [];
    for (let i = 0; i * state.step <= state.total * 1.0001; i += 1) {
      const at = (i * state.step) / state.total;
      // A label too close to the right edge would overflow: keep only its line.
      const tick = h('div', { className: 'tick' },
        at <= 0.9 ? h('span', { text: formatTick(i * state.step) }) : null);
      tick.style.left = `${at * 100}%`;
      ticks.push(tick);
    }
    fill(ui.ticks, ticks);
  }

  function isHidden(node) {
    for (let p = node.parent; p; p = p.parent) if (state.collapsed.has(p.span.spanId)) return true;
    return false;
  }

  function visibleNodes() {
    return state.order.filter((node) => !isHidden(node));
  }

  function renderRows() {
    const hadFocus = ui.waterfall.contains(document.activeElement);
    const rows = visibleNodes().map(spanRow);
    fill(ui.waterfall, ...rows);
    const current = ui.waterfall.querySelector('[aria-selected="true"]') || rows[0];
    if (current) current.tabIndex = 0;
    if (hadFocus && current) current.focus({ preventScroll: true });
  }

  function percent(value) {
    return `${Math.min(100, Math.max(0, (value / state.total) * 100))}%`;
  }

  function spanRow(node) {
    const s = node.span;
    const isError = s.status === 'ERROR';
    const hasChildren = node.children.length > 0;
    const collapsed = state.collapsed.has(s.spanId);
    const offset = s.startTime - state.t0;

    const twisty = h('span', {
      className: hasChildren ? 'twisty has-children' : 'twisty',
      'aria-hidden': 'true',
      text: hasChildren ? (collapsed ? '▶' : '▼') : '',
    });
    if (hasChildren) {
      twisty.addEventListener('click', (event) => {
        event.stopPropagation();
        toggle(s.spanId);
      });
    }
    const name = h('span', { className: 'span-name' },
      twisty,
      isError ? h('span', { className: 'error-mark', 'aria-hidden': 'true', text: '!' }) : null,
      h('span', { className: 'label', text: s.name }),
      s.kind && s.kind !== 'INTERNAL' ? h('span', { className: 'kind', text: s.kind }) : null,
      modelTag(s.attributes || {}),
      isError ? visuallyHidden(', failed') : null,
      hasChildren && collapsed ? h('span', { className: 'kind', text: `+${countDescendants(node)}` }) : null);
    name.style.paddingLeft = `${6 + node.depth * INDENT_PX}px`;

    const bar = h('span', {
      className: ['bar', isError && 'is-error', !node.parent && 'is-root'].filter(Boolean).join(' '),
    });
    bar.style.left = percent(offset);
    bar.style.width = percent(Math.max(0, s.durationMs));
    const track = h('span', { className: 'span-track', 'aria-hidden': 'true' }, bar);
    track.style.backgroundSize = `${(state.step / state.total) * 100}% 100%`; // grid lines on the ticks
    for (const event of s.events || []) {
      const mark = h('span', { className: 'event-mark', title: `${event.name} at +${formatDuration(event.time - state.t0)}` });
      mark.style.left = percent(event.time - state.t0);
      track.append(mark);
    }

    const row = h('div', {
      className: isError ? 'span-row is-error' : 'span-row',
      role: 'treeitem',
      tabindex: '-1',
      'aria-level': String(node.depth + 1),
      'aria-selected': String(s.spanId === state.selectedSpan),
      'aria-expanded': hasChildren ? String(!collapsed) : null,
      dataset: { spanId: s.spanId },
      title: `${s.name} · ${formatDuration(s.durationMs)} · starts at +${formatDuration(offset)}`,
    },
    name,
    track,
    h('span', { className: 'span-dur', text: formatDuration(s.durationMs) }));
    return row;
  }

  // "iris v2": tells apart the many gateway.predict spans of an operation with aliases.
  function modelTag(attributes) {
    const model = attributes['gateway.model.name'];
    if (typeof model !== 'string') return null;
    const version = attributes['gateway.model.version'];
    return h('span', { className: 'model-tag', text: version === undefined ? model : `${model} v${version}` });
  }

  function countDescendants(node) {
    let n = 0;
    const stack = [...node.children];
    while (stack.length) {
      const next = stack.pop();
      n += 1;
      stack.push(...next.children);
    }
    return n;
  }

  function toggle(spanId, expand = null) {
    const collapse = expand === null ? !state.collapsed.has(spanId) : !expand;
    if (collapse) state.collapsed.add(spanId);
    else state.collapsed.delete(spanId);
    // The selected span must stay visible: select the collapsed parent instead.
    const selected = state.nodes.get(state.selectedSpan);
    if (collapse && selected && isHidden(selected)) state.selectedSpan = spanId;
    renderRows();
    selectSpan(state.selectedSpan, { focus: ui.waterfall.contains(document.activeElement) });
  }

  function selectSpan(spanId, { focus = true, updateHash = true, scroll = true } = {}) {
    const node = state.nodes.get(spanId);
    if (!node) return;
    state.selectedSpan = spanId;
    let target = null;
    for (const row of ui.waterfall.children) {
      const selected = row.dataset.spanId === spanId;
      row.setAttribute('aria-selected', String(selected));
      row.tabIndex = selected ? 0 : -1;
      if (selected) target = row;
    }
    if (target) {
      if (focus) target.focus({ preventScroll: true });
      if (scroll) target.scrollIntoView({ block: 'nearest' });
    }
    renderSpanDetails(node);
    if (updateHash && state.trace) {
      history.replaceState(null, '', `#${state.trace.traceId}/${spanId}`);
    }
  }

  // --- Span details ------------------------------------------------------------------------

  function valueCell(key, value, plain) {
    let text;
    let kind = 'string';
    if (typeof value === 'string') text = value;
    else if (typeof value === 'number') { text = String(value); kind = 'number'; }
    else if (typeof value === 'boolean') { text = String(value); kind = 'bool'; }
    else { text = JSON.stringify(value); kind = 'number'; }
    if (key === 'gateway.error.code') return h('td', { className: 'is-error', text });
    return h('td', { className: plain ? null : `value-${kind}`, text });
  }

  function kvTable(label, entries, plain = false) {
    return h('table', { className: 'kv', 'aria-label': label },
      h('tbody', {}, entries.map(([key, value]) => h('tr', {}, h('th', { scope: 'row', text: key }), valueCell(key, value, plain)))));
  }

  function renderSpanDetails(node) {
    const s = node.span;
    const offset = s.startTime - state.t0;
    const attributes = Object.entries(s.attributes || {}).sort(([a], [b]) => a.localeCompare(b));
    const events = s.events || [];
    const links = s.links || [];
    const parent = node.parent ? node.parent.span : null;

    const facts = [
      ['span id', s.spanId],
      ['parent', parent ? `${parent.name} (${parent.spanId})` : s.parentSpanId ? `${s.parentSpanId} (not kept)` : '— (root)'],
      ['kind', s.kind || '—'],
      ['status', s.statusMessage ? `${s.status}: ${s.statusMessage}` : s.status],
      ['start', `+${formatDuration(offset)} (${formatClock(s.startTime)})`],
      ['duration', formatDuration(s.durationMs)],
    ];
    const factTable = kvTable('Span', facts, true);
    const statusCell = factTable.rows[3].cells[1];
    if (s.status === 'ERROR') statusCell.className = 'is-error';

    fill(ui.spanDetails,
      h('div', { className: 'details-head' }, h('h3', { text: s.name }), statusBadge(s.status, s.statusMessage)),
      factTable,
      h('h4', { text: `Attributes (${attributes.length})` }),
      attributes.length ? kvTable('Attributes', attributes) : h('p', { className: 'hint', text: 'No attributes.' }),
      h('h4', { text: `Events (${events.length})` }),
      events.length
        ? events.map((e) => h('div', { className: 'event' },
          h('div', { className: 'event-title' }, e.name, ' ', h('span', { className: 'muted', text: `+${formatDuration(e.time - state.t0)}` })),
          Object.keys(e.attributes || {}).length ? kvTable(`Event ${e.name}`, Object.entries(e.attributes)) : null))
        : h('p', { className: 'hint', text: 'No events.' }),
      h('h4', { text: `Links (${links.length})` }),
      links.length ? linkList(links) : h('p', { className: 'hint', text: 'No links.' }),
    );
  }

  function linkList(links) {
    const list = h('ul', { className: 'links' });
    const items = links.map((link) => {
      const sameTrace = state.trace && link.traceId === state.trace.traceId;
      const item = h('li', {},
        h('a', { href: `#${link.traceId}/${link.spanId}`, text: `trace ${link.traceId} · span ${link.spanId}` }),
        sameTrace ? h('span', { className: 'muted', text: ' (this trace)' }) : null);
      list.append(item);
      return { link, item, sameTrace };
    });
    // Linked traces may have left the store: mark those, from the (unfiltered) list, so the
    // check costs one request and no 404s.
    const others = items.filter((i) => !i.sameTrace);
    if (others.length) {
      const forTrace = state.trace && state.trace.traceId;
      getJSON(API).then((body) => {
        if (!state.trace || state.trace.traceId !== forTrace) return;
        const kept = new Set((body.traces || []).map((t) => t.traceId));
        for (const { link, item } of others) {
          if (!kept.has(link.traceId)) {
            fill(item,
              h('span', { text: `trace ${link.traceId} · span ${link.spanId} ` }),
              h('span', { className: 'gone', text: '(not in the store)' }),
            );
          }
        }
      }, () => {});
    }
    return list;
  }

  // --- Keyboard ----------------------------------------------------------------------------

  function onWaterfallKey(event) {
    const rows = [...ui.waterfall.children];
    const index = rows.findIndex((row) => row.dataset.spanId === state.selectedSpan);
    const node = state.nodes.get(state.selectedSpan);
    let next = null;
    switch (event.key) {
      case 'ArrowDown': next = rows[Math.min(rows.length - 1, index + 1)]; break;
      case 'ArrowUp': next = rows[Math.max(0, index - 1)]; break;
      case 'Home': next = rows[0]; break;
      case 'End': next = rows[rows.length - 1]; break;
      case 'ArrowRight':
        if (node && node.children.length) {
          if (state.collapsed.has(node.span.spanId)) toggle(node.span.spanId, true);
          else next = rows[index + 1];
        }
        break;
      case 'ArrowLeft':
        if (node && node.children.length && !state.collapsed.has(node.span.spanId)) toggle(node.span.spanId, false);
        else if (node && node.parent) selectSpan(node.parent.span.spanId);
        break;
      case 'Enter':
      case ' ':
        if (node) selectSpan(node.span.spanId);
        break;
      default:
        return;
    }
    event.preventDefault();
    if (next) selectSpan(next.dataset.spanId);
  }

  function onListKey(event) {
    if (event.key !== 'ArrowDown' && event.key !== 'ArrowUp') return;
    const row = document.activeElement.closest('tr');
    if (!row || !ui.rows.contains(row)) return;
    const next = event.key === 'ArrowDown' ? row.nextElementSibling : row.previousElementSibling;
    if (next) {
      event.preventDefault();
      next.querySelector('a').focus();
    }
  }

  // --- Wiring ------------------------------------------------------------------------------

  ui.openForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const match = ui.openId.value.match(TRACE_ID);
    if (!match) {
      ui.openId.setAttribute('aria-invalid', 'true');
      ui.openError.textContent = ui.openId.value.trim() ? 'Not a trace id (32 hex digits)' : 'Paste a trace id first';
      return;
    }
    ui.openId.removeAttribute('aria-invalid');
    ui.openError.textContent = '';
    ui.openId.value = match[0].toLowerCase();
    navigate(match[0].toLowerCase());
  });
  ui.openId.addEventListener('input', () => {
    ui.openId.removeAttribute('aria-invalid');
    ui.openError.textContent = '';
  });

  ui.refresh.addEventListener('click', () => loadList());
  ui.auto.addEventListener('change', () => {
    if (ui.auto.checked) loadList();
    else clearTimeout(state.timer);
  });
  ui.filters.addEventListener('submit', (event) => event.preventDefault());
  ui.minMs.addEventListener('input', () => onFiltersChanged(300));
  ui.failed.addEventListener('change', () => onFiltersChanged());
  ui.model.addEventListener('change', () => onFiltersChanged());
  ui.clear.addEventListener('click', clearFilters);

  ui.rows.addEventListener('click', (event) => {
    const row = event.target.closest('tr');
    if (!row || event.target.closest('a')) return; // the link navigates by itself
    navigate(row.dataset.traceId);
  });
  ui.rows.addEventListener('keydown', onListKey);

  ui.waterfall.addEventListener('click', (event) => {
    const row = event.target.closest('.span-row');
    if (row) selectSpan(row.dataset.spanId);
  });
  ui.waterfall.addEventListener('keydown', onWaterfallKey);

  window.addEventListener('hashchange', onHashChange);
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && ui.auto.checked) loadList();
  });
  document.addEventListener('keydown', (event) => {
    const typing = event.target.closest('input, select, textarea, [contenteditable]');
    if (event.key === '/' && !typing && !event.ctrlKey && !event.metaKey && !event.altKey) {
      event.preventDefault();
      ui.openId.focus();
      ui.openId.select();
    }
  });

  loadList();
  onHashChange();
})();
