// The demo page: a tiny STOMP 1.2 client over WebSocket, straight to Bourse.
(async () => {
  const cfg = await (await fetch('config.json')).json();
  const status = document.getElementById('status');
  const counts = { payments: 0, invoices: 0 };
  const sensors = {};
  function add(list, text) {
    const ol = document.getElementById(list);
    const li = document.createElement('li');
    li.textContent = text;
    ol.prepend(li);
    while (ol.children.length > 15) ol.lastChild.remove();
    counts[list]++;
    document.getElementById('n-' + list).textContent = counts[list];
  }
  const handlers = {
    'pay': (h, body) => { const p = JSON.parse(body); add('payments', `${p.payment}  ${p.order}  ${p.amount.toFixed(2)} €`); },
    'inv': (h, body) => { const e = JSON.parse(body); add('invoices', `${e.order} → ${e.customer}`); },
    'tel': (h, body) => {
      const t = JSON.parse(body); sensors[t.sensor] = t.celsius;
      document.getElementById('telemetry').replaceChildren(...Object.keys(sensors).sort().map(k => {
        const d = document.createElement('div'); d.className = 'sensor';
        const a = document.createElement('span'); a.textContent = k;
        const b = document.createElement('b'); b.textContent = sensors[k].toFixed(2) + ' °C';
        d.append(a, b); return d;
      }));
    },
  };
  function frame(cmd, headers, body = '') {
    return cmd + '\n' + Object.entries(headers).map(([k, v]) => k + ':' + v).join('\n') + '\n\n' + body + '\0';
  }
  function connect() {
    const ws = new WebSocket(cfg.ws, ['v12.stomp']);
    let buf = '';
    ws.onopen = () => ws.send(frame('CONNECT', { 'accept-version': '1.2', host: '/', login: cfg.user, passcode: cfg.pass, 'heart-beat': '0,0' }));
    ws.onmessage = async (ev) => {
      buf += typeof ev.data === 'string' ? ev.data : await ev.data.text();
      let i;
      while ((i = buf.indexOf('\0')) >= 0) {
        const raw = buf.slice(0, i); buf = buf.slice(i + 1);
        const f = raw.replace(/^\n+/, ''); if (!f) continue;
        const sep = f.indexOf('\n\n');
        const lines = f.slice(0, sep).split('\n');
        const cmd = lines.shift(), h = {};
        for (const l of lines) { const c = l.indexOf(':'); if (!(l.slice(0, c) in h)) h[l.slice(0, c)] = l.slice(c + 1); }
        const body = f.slice(sep + 2);
        if (cmd === 'CONNECTED') {
          status.textContent = 'live over STOMP/WebSocket';
          ws.send(frame('SUBSCRIBE', { id: 'pay', destination: '/exchange/payments/payment.#' }));
          ws.send(frame('SUBSCRIBE', { id: 'inv', destination: '/topic/events.invoice.sent' }));
          ws.send(frame('SUBSCRIBE', { id: 'tel', destination: '/topic/sensors.*.temperature' }));
          window.demoConnected = true;
        } else if (cmd === 'MESSAGE') {
          try { handlers[h.subscription](h, body); } catch (e) { console.error(e); }
        } else if (cmd === 'ERROR') {
          status.textContent = 'error: ' + h.message;
        }
      }
    };
    ws.onclose = () => { status.textContent = 'disconnected; reconnecting…'; setTimeout(connect, 2000); };
  }
  connect();
})();
