// Shared helpers: API calls, DOM building (text only: never innerHTML), formatting, header.

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

export async function api(path, {method = 'GET', body} = {}) {
  const init = {method, credentials: 'same-origin', headers: {'Accept': 'application/json'}};
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['Content-Type'] = 'application/json';
  }
  const response = await fetch(path, init);
  if (response.status === 401) {
    location.assign('/ui/login?next=' + encodeURIComponent(location.pathname + location.search));
    throw new ApiError(401, 'not logged in');
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof data.detail === 'string' ? data.detail : response.statusText;
    throw new ApiError(response.status, detail);
  }
  return data;
}

// el('a', {href: url, class: 'x'}, 'text', child): attributes via setAttribute, children as
// text nodes. Attacker-controlled strings (paths, principals, SNI...) only ever become text.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key.startsWith('on') && typeof value === 'function') node.addEventListener(key.slice(2), value);
    else if (key === 'href' || key === 'src') {
      const url = safeUrl(value);
      if (url) node.setAttribute(key, url);
    } else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// Only http(s) URLs (a javascript: runbook link from a hostile config never becomes a link).
export function safeUrl(value) {
  try {
    const url = new URL(String(value), location.origin);
    return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : null;
  } catch {
    return null;
  }
}

export function fmtTime(value) {
  if (!value) return '';
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? String(value) : d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

export function endpointText(ep) {
  if (!ep) return '';
  if (ep.workload) return `${ep.namespace || '?'}/${ep.workload}`;
  return ep.service || ep.principal || ep.address || '';
}

export const SEVERITIES = ['critical', 'high', 'medium', 'low', 'info'];

export function severityBadge(severity) {
  return el('span', {class: `sev sev-${SEVERITIES.includes(severity) ? severity : 'info'}`}, severity);
}

export function statusBadge(status) {
  return el('span', {class: `status status-${status}`}, status);
}

export function notify(message, kind = 'info') {
  const box = document.getElementById('toast');
  if (!box) return;
  box.className = `toast toast-${kind}`;
  box.textContent = message;
  clearTimeout(notify.timer);
  notify.timer = setTimeout(() => { box.textContent = ''; box.className = 'toast'; }, 5000);
}

export async function header(active) {
  const nav = document.getElementById('nav');
  const who = el('span', {class: 'who', id: 'whoami'});
  const logout = el('button', {type: 'button', class: 'link', id: 'logout'}, 'Log out');
  logout.addEventListener('click', async () => {
    await api('/api/v1/session', {method: 'DELETE'}).catch(() => null);
    location.assign('/ui/login');
  });
  const link = (href, text, name) => el('a', {href, 'aria-current': active === name ? 'page' : null}, text);
  nav.replaceChildren(
    el('strong', {class: 'brand'}, 'meshwatch'),
    link('/ui/', 'Alerts', 'feed'), link('/ui/graph', 'Service graph', 'graph'),
    link('/docs', 'API docs', 'docs'), el('span', {class: 'spacer'}), who, logout);
  try {
    const me = await api('/api/v1/session');
    who.textContent = `${me.name} (${me.role})`;
    document.body.dataset.role = me.role;
    return me;
  } catch {
    return null;
  }
}

export function canAct(me) {
  return me && (me.role === 'analyst' || me.role === 'admin');
}

function sparkline(points, key, cls) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  const width = 360, height = 50;
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('width', String(width));
  svg.setAttribute('height', String(height));
  svg.setAttribute('class', 'spark');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', `${key} per window`);
  const max = Math.max(1, ...points.map((p) => p[key] || 0));
  const w = width / Math.max(points.length, 1);
  points.forEach((p, i) => {
    const h = ((p[key] || 0) / max) * (height - 2);
    const r = document.createElementNS(ns, 'rect');
    r.setAttribute('x', String(i * w)); r.setAttribute('y', String(height - h));
    r.setAttribute('width', String(Math.max(w - 1, 1))); r.setAttribute('height', String(h));
    if (cls) r.setAttribute('class', cls);
    svg.append(r);
  });
  return svg;
}

export function seriesView(edge) {
  if (!edge || !edge.points.length) return el('p', {class: 'muted'}, 'No windows for this edge in the alert\'s span.');
  const p = edge.points;
  return el('div', {},
    el('p', {}, 'Requests per window'), sparkline(p, 'requests'),
    el('p', {}, 'Plaintext (no client certificate) per window'), sparkline(p, 'mtls_false', 'plain'),
    el('table', {id: 'series-table'}, el('thead', {}, el('tr', {}, ['window', 'requests', 'mTLS', 'plaintext', '5xx', 'denied'].map((h) => el('th', {scope: 'col'}, h)))),
      el('tbody', {}, p.map((x) => el('tr', {}, el('td', {}, fmtTime(x.window_start)), el('td', {class: 'num'}, x.requests),
        el('td', {class: 'num'}, x.mtls_true), el('td', {class: 'num'}, x.mtls_false),
        el('td', {class: 'num'}, x.errors_5xx), el('td', {class: 'num'}, x.denials))))));
}
