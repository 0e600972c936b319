// Bourse console: a client of the management API, nothing more.
const $ = (s, el = document) => el.querySelector(s);
const $$ = (s, el = document) => [...el.querySelectorAll(s)];
let auth = sessionStorage.getItem('bourse-auth');

async function api(path, opts = {}) {
  const r = await fetch('/api/' + path, {
    ...opts,
    headers: { 'Authorization': 'Basic ' + auth, 'Content-Type': 'application/json', ...(opts.headers || {}) },
  });
  if (r.status === 401) { showLogin('Login failed'); throw new Error('unauthorised'); }
  if (!r.ok) {
    let reason = r.statusText;
    try { reason = (await r.json()).reason || reason; } catch (_) {}
    throw new Error(reason);
  }
  const ct = r.headers.get('Content-Type') || '';
  if (r.status === 204) return null;
  return ct.includes('json') ? r.json() : r;
}

function showLogin(msg) {
  $$('main > section').forEach(s => s.hidden = true);
  $('#login').hidden = false;
  $('#login-error').textContent = msg || '';
}

$('#login').addEventListener('submit', async e => {
  e.preventDefault();
  const f = new FormData(e.target);
  auth = btoa(f.get('user') + ':' + f.get('pass'));
  try {
    const me = await api('whoami');
    sessionStorage.setItem('bourse-auth', auth);
    $('#who').textContent = me.name;
    $('#login').hidden = true;
    route();
  } catch (err) { $('#login-error').textContent = err.message; }
});

// ---- tabs ----
const loaders = { overview: loadOverview, queues: loadQueues, exchanges: loadExchanges, bindings: loadBindings, connections: loadConnections, publish: () => {}, stream: () => {} };
function route() {
  if (!auth) return showLogin();
  const tab = (location.hash || '#overview').slice(1);
  $$('main > section').forEach(s => s.hidden = s.id !== tab);
  $$('nav a').forEach(a => a.classList.toggle('active', a.dataset.tab === tab));
  (loaders[tab] || loadOverview)();
}
window.addEventListener('hashchange', route);

// ---- tables: sort and filter ----
const tables = {};
function renderTable(id, rows, cells, filterId) {
  const t = tables[id] ||= { key: null, dir: 1 };
  t.rows = rows; t.cells = cells; t.filterId = filterId;
  drawTable(id);
}
function drawTable(id) {
  const t = tables[id];
  const q = t.filterId ? $('#' + t.filterId).value.toLowerCase() : '';
  let rows = t.rows.filter(r => !q || JSON.stringify(Object.values(r)).toLowerCase().includes(q));
  if (t.key) rows = [...rows].sort((a, b) => (a[t.key] > b[t.key] ? 1 : a[t.key] < b[t.key] ? -1 : 0) * t.dir);
  const tb = $('#' + id + ' tbody');
  tb.replaceChildren(...rows.map(r => {
    const tr = document.createElement('tr');
    for (const c of t.cells(r)) tr.appendChild(c);
    return tr;
  }));
}
$$('table.sortable').forEach(tbl => tbl.addEventListener('click', e => {
  const th = e.target.closest('th[data-key]');
  if (!th) return;
  const t = tables[tbl.id];
  t.dir = t.key === th.dataset.key ? -t.dir : 1;
  t.key = th.dataset.key;
  drawTable(tbl.id);
}));
['queue', 'exchange', 'binding', 'connection'].forEach(n => $('#' + n + '-filter').addEventListener('input', () => drawTable(n + '-table')));

function td(text, cls) { const c = document.createElement('td'); c.textContent = text ?? ''; if (cls) c.className = cls; return c; }
function button(label, fn) {
  const c = document.createElement('td'); const b = document.createElement('button');
  b.textContent = label; b.addEventListener('click', fn); c.appendChild(b); return c;
}
const enc = encodeURIComponent;

// ---- overview ----
const history = [];
let timer;
async function loadOverview() {
  clearTimeout(timer);
  if ($('#overview').hidden) return;
  try {
    const [ov, nodes] = await Promise.all([api('overview'), api('nodes')]);
    const o = ov.object_totals, q = ov.queue_totals, m = ov.message_stats;
    $('#totals').replaceChildren(...[
      ['Queues', o.queues], ['Exchanges', o.exchanges], ['Consumers', o.consumers],
      ['Ready', q.messages_ready], ['Unacked', q.messages_unacknowledged], ['Published', m.publish],
    ].map(([k, v]) => card(k, v)));
    const n = nodes[0];
    $('#node').replaceChildren(
      card('Memory', mib(n.mem_used) + ' / ' + mib(n.mem_limit), n.mem_alarm),
      card('Disk free', mib(n.disk_free) + ' (limit ' + mib(n.disk_free_limit) + ')', n.disk_free_alarm),
      card('Uptime', Math.round(n.uptime / 1000) + ' s'));
    history.push({ t: Date.now(), publish: m.publish, deliver: m.deliver_get, ack: m.ack });
    while (history.length > 150) history.shift();
    drawRates();
  } catch (err) { console.error(err); }
  timer = setTimeout(loadOverview, 2000);
}
function card(k, v, alarm) {
  const d = document.createElement('div'); d.className = 'card' + (alarm ? ' alarm' : '');
  const b = document.createElement('b'); b.textContent = v; d.append(b, k + (alarm ? ' (ALARM)' : '')); return d;
}
const mib = b => (b / 1048576).toFixed(0) + ' MiB';
const series = [['publish', '#2f6feb'], ['deliver', '#12b76a'], ['ack', '#f79009']];
function drawRates() {
  const cv = $('#rates'), g = cv.getContext('2d');
  g.clearRect(0, 0, cv.width, cv.height);
  const rates = series.map(([k]) => history.slice(1).map((h, i) => (h[k] - history[i][k]) / ((h.t - history[i].t) / 1000)));
  const max = Math.max(1, ...rates.flat());
  g.strokeStyle = '#e4e7ec'; g.beginPath(); g.moveTo(0, cv.height - 1); g.lineTo(cv.width, cv.height - 1); g.stroke();
  rates.forEach((rs, s) => {
    g.strokeStyle = series[s][1]; g.lineWidth = 2; g.beginPath();
    rs.forEach((r, i) => { const x = i * cv.width / 149, y = cv.height - 4 - r / max * (cv.height - 10); i ? g.lineTo(x, y) : g.moveTo(x, y); });
    g.stroke();
  });
  $('#legend').replaceChildren(...series.map(([k, c], s) => {
    const sp = document.createElement('span'); sp.style.color = c;
    const last = rates[s].length ? rates[s][rates[s].length - 1] : 0;
    sp.textContent = k + ' ' + last.toFixed(1) + '/s'; return sp;
  }));
}

// ---- queues ----
async function loadQueues() {
  const qs = await api('queues');
  renderTable('queue-table', qs, q => [td(q.vhost), td(q.name), td(q.type), td(q.messages_ready, 'num'), td(q.messages_unacknowledged, 'num'),
    td(q.messages, 'num'), td(q.consumers, 'num'), actions(q)], 'queue-filter');
}
function actions(q) {
  const c = document.createElement('td');
  const peek = document.createElement('button'); peek.textContent = q.type === 'stream' ? 'Read' : 'Peek';
  peek.addEventListener('click', () => q.type === 'stream' ? openStream(q) : peekQueue(q));
  const del = document.createElement('button'); del.textContent = 'Delete';
  del.addEventListener('click', async () => {
    if (!confirm('Delete ' + q.name + '?')) return;
    await api('queues/' + enc(q.vhost) + '/' + enc(q.name), { method: 'DELETE' }); loadQueues();
  });
  c.append(peek, ' ', del); return c;
}
async function peekQueue(q) {
  const msgs = await api('queues/' + enc(q.vhost) + '/' + enc(q.name) + '/get', { method: 'POST', body: JSON.stringify({ count: 10, ackmode: 'ack_requeue_true', encoding: 'auto', truncate: 2000 }) });
  $('#peek').hidden = false; $('#peek-name').textContent = q.name;
  $('#peek-body').textContent = msgs.length ? msgs.map(m => m.routing_key + '  ' + m.payload).join('\n') : '(empty)';
}
function openStream(q) {
  location.hash = '#stream';
  const f = $('#stream-form'); f.vhost.value = q.vhost; f.stream.value = q.name; f.offset.value = 'first';
  readStream();
}
$('#declare-queue').addEventListener('submit', async e => {
  e.preventDefault();
  const f = new FormData(e.target);
  const args = f.get('type') === 'classic' ? {} : { 'x-queue-type': f.get('type') };
  try { await api('queues/%2F/' + enc(f.get('name')), { method: 'PUT', body: JSON.stringify({ durable: true, arguments: args }) }); e.target.reset(); loadQueues(); }
  catch (err) { alert(err.message); }
});

// ---- exchanges and bindings ----
async function loadExchanges() {
  const xs = await api('exchanges');
  renderTable('exchange-table', xs.map(x => ({ ...x, name: x.name || '(default)' })), x => [td(x.vhost), td(x.name), td(x.type), td(String(x.durable)), td(String(x.internal)),
    x.name.startsWith('amq.') || x.name === '(default)' ? td('') : button('Delete', async () => {
      if (!confirm('Delete exchange ' + x.name + '?')) return;
      await api('exchanges/' + enc(x.vhost) + '/' + enc(x.name), { method: 'DELETE' }); loadExchanges();
    })], 'exchange-filter');
}
async function loadBindings() {
  const bs = await api('bindings');
  renderTable('binding-table', bs.map(b => ({ ...b, source: b.source || '(default)' })), b => [td(b.vhost), td(b.source), td(b.destination_type), td(b.destination), td(b.routing_key)], 'binding-filter');
}

async function loadConnections() {
  const cs = await api('connections');
  renderTable('connection-table', cs, c => [td(c.name), td(c.protocol), td(c.transport), td(c.user), td(c.vhost), td(c.channels, 'num'),
    button('Close', async () => {
      if (!confirm('Close ' + c.name + '?')) return;
      await api('connections/' + enc(c.name), { method: 'DELETE', headers: { 'X-Reason': 'closed from the console' } });
      setTimeout(loadConnections, 300);
    })], 'connection-filter');
}

// ---- publish ----
$('#publish-form').addEventListener('submit', async e => {
  e.preventDefault();
  const f = new FormData(e.target);
  try {
    const r = await api('exchanges/' + enc(f.get('vhost')) + '/' + enc(f.get('exchange') || 'amq.default') + '/publish',
      { method: 'POST', body: JSON.stringify({ routing_key: f.get('key'), payload: f.get('payload'), payload_encoding: 'string', properties: {} }) });
    $('#publish-result').textContent = r.routed ? 'Routed.' : 'Published, but no queue took it.';
  } catch (err) { $('#publish-result').textContent = 'Error: ' + err.message; }
});

// ---- streams: the fetch endpoint's records, decoded (storage/FORMAT.md) ----
$('#stream-form').addEventListener('submit', e => { e.preventDefault(); readStream(); });
async function readStream() {
  const f = $('#stream-form');
  const r = await fetch('/api/streams/' + enc(f.vhost.value) + '/' + enc(f.stream.value) + '/records?max_bytes=262144&offset=' + enc(f.offset.value),
    { headers: { 'Authorization': 'Basic ' + auth } });
  if (r.status === 204) { $('#stream-status').textContent = 'No records at this offset yet.'; $('#record-table tbody').replaceChildren(); return; }
  if (!r.ok) { $('#stream-status').textContent = 'Error: ' + ((await r.json()).reason || r.statusText); return; }
  const recs = decodeRecords(new Uint8Array(await r.arrayBuffer()));
  $('#record-table tbody').replaceChildren(...recs.map(x => {
    const tr = document.createElement('tr');
    tr.append(td(x.offset, 'num'), td(new Date(x.ts).toISOString()), td(x.key), td(x.body));
    return tr;
  }));
  $('#stream-status').textContent = recs.length + ' records; next offset ' + r.headers.get('Bourse-Next-Offset') + ', tail ' + r.headers.get('Bourse-Tail-Offset');
  f.offset.value = r.headers.get('Bourse-Next-Offset');
}
function decodeRecords(b) {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength), out = [], text = new TextDecoder();
  let p = 0;
  while (p + 24 <= b.length) {
    const len = dv.getUint32(p), end = p + 4 + len;
    if (end > b.length) break;
    const rec = { offset: dv.getBigUint64(p + 8).toString(), ts: Number(dv.getBigInt64(p + 16)) };
    let q = p + 24;
    const uvar = () => { let x = 0n, s = 0n; for (;;) { const c = b[q++]; x |= BigInt(c & 0x7f) << s; if (c < 0x80) return x; s += 7n; } };
    const str = () => { const n = Number(uvar()); const s = text.decode(b.subarray(q, q + n)); q += n; return s; };
    str(); rec.key = str();
    for (let i = 0; i < 10; i++) str();
    q += 2; uvar(); uvar(); q += 1; str(); str();
    const n = Number(uvar()); rec.body = text.decode(b.subarray(q, q + Math.min(n, 2000)));
    out.push(rec); p = end;
  }
  return out;
}

route();
