// The alert feed: filters, cursor pages, live updates over SSE, bulk acknowledge, precision.
import {api, canAct, el, endpointText, fmtTime, header, notify, severityBadge, statusBadge} from './common.js';

const rows = document.getElementById('alert-rows');
const form = document.getElementById('filters');
const more = document.getElementById('more');
const bulk = document.getElementById('bulk-ack');
const selectAll = document.getElementById('select-all');
const live = document.getElementById('live');
const selected = new Set();
let cursor = null;
let me = null;

function filters() {
  const data = new FormData(form);
  const params = new URLSearchParams();
  for (const [key, value] of data.entries()) {
    if (String(value).trim() !== '') params.append(key, String(value).trim());
  }
  return params;
}

function matches(alert) {
  // Whether a live alert belongs in the current view (the filters the server would apply).
  const f = Object.fromEntries(filters());
  if (f.status && alert.status !== f.status) return false;
  if (f.severity && alert.severity !== f.severity) return false;
  if (f.detector && alert.detector !== f.detector) return false;
  if (f.namespace && alert.source.namespace !== f.namespace && alert.destination.namespace !== f.namespace) return false;
  const has = (text, needle) => String(text || '').toLowerCase().includes(needle.toLowerCase());
  if (f.q && !has(alert.title, f.q) && !has(alert.summary, f.q) && alert.id !== f.q) return false;
  if (f.source && !['workload', 'principal', 'namespace', 'address'].some((k) => has(alert.source[k], f.source))) return false;
  if (f.destination && !['service', 'workload', 'namespace'].some((k) => has(alert.destination[k], f.destination))) return false;
  return true;
}

function row(alert) {
  const box = el('input', {type: 'checkbox', 'aria-label': `Select alert ${alert.id}`, 'data-id': alert.id,
                           checked: selected.has(alert.id)});
  box.addEventListener('change', () => {
    if (box.checked) selected.add(alert.id); else selected.delete(alert.id);
    updateBulk();
  });
  return el('tr', {'data-id': alert.id, 'data-status': alert.status},
    el('td', {}, box),
    el('td', {}, severityBadge(alert.severity)),
    el('td', {class: 'wrap'}, el('a', {href: `/ui/alerts/${encodeURIComponent(alert.id)}`}, alert.title),
       el('div', {class: 'muted'}, alert.detector)),
    el('td', {class: 'wrap mono'}, endpointText(alert.source)),
    el('td', {class: 'wrap mono'}, endpointText(alert.destination)),
    el('td', {class: 'num'}, alert.count),
    el('td', {}, fmtTime(alert.last_seen)),
    el('td', {}, statusBadge(alert.status)),
    el('td', {}, alert.labels && alert.labels.assignee ? alert.labels.assignee : ''));
}

function updateBulk() {
  document.getElementById('selected-count').textContent = `${selected.size} selected`;
  bulk.disabled = selected.size === 0 || !canAct(me);
}

async function load(append = false) {
  const params = filters();
  params.set('limit', '50');
  if (append && cursor) params.set('cursor', cursor);
  try {
    const page = await api(`/api/v1/alerts?${params}`);
    if (!append) rows.replaceChildren();
    for (const alert of page.items) rows.append(row(alert));
    cursor = page.next_cursor;
    more.hidden = !cursor;
    document.getElementById('empty').textContent = rows.children.length ? '' : 'No alerts match.';
  } catch (err) {
    notify(err.message, 'error');
  }
}

function onLive(alert) {
  const existing = rows.querySelector(`tr[data-id="${CSS.escape(alert.id)}"]`);
  const fits = matches(alert);
  if (existing) {
    if (fits) existing.replaceWith(row(alert)); else existing.remove();
    return;
  }
  const sort = new FormData(form).get('sort') || 'last_seen';
  if (!fits || sort !== 'last_seen') return;
  const tr = row(alert);
  tr.classList.add('new');
  rows.prepend(tr);
  document.getElementById('empty').textContent = '';
}

function connect() {
  const source = new EventSource('/api/v1/alerts/stream');
  source.addEventListener('open', () => { live.dataset.state = 'open'; live.textContent = 'live'; });
  source.addEventListener('error', () => { live.dataset.state = 'error'; live.textContent = 'reconnecting…'; });
  source.addEventListener('alert', (event) => {
    try { onLive(JSON.parse(event.data).alert); } catch { /* ignore a malformed event */ }
  });
  source.addEventListener('reset', () => load(false));
}

async function loadPrecision() {
  const body = document.querySelector('#precision tbody');
  try {
    const data = await api('/api/v1/detectors/precision');
    body.replaceChildren(...data.items.map((p) => el('tr', {},
      el('td', {}, p.detector), el('td', {class: 'num'}, p.true_positive),
      el('td', {class: 'num'}, p.false_positive), el('td', {class: 'num'}, p.benign_by_design),
      el('td', {class: 'num'}, p.precision === null ? 'n/a' : `${(p.precision * 100).toFixed(0)}%`))));
    if (!data.items.length) body.replaceChildren(el('tr', {}, el('td', {colspan: 5, class: 'muted'}, 'No feedback yet.')));
  } catch (err) {
    notify(err.message, 'error');
  }
}

bulk.addEventListener('click', async () => {
  const ids = [...selected];
  try {
    const result = await api('/api/v1/alerts/bulk', {method: 'POST', body: {action: 'acknowledge', ids, comment: 'bulk acknowledge'}});
    selected.clear();
    updateBulk();
    const failed = Object.keys(result.failed).length;
    notify(`acknowledged ${result.done.length}` + (failed ? `, ${failed} failed` : ''), failed ? 'error' : 'info');
    await load(false);
  } catch (err) {
    notify(err.message, 'error');
  }
});

selectAll.addEventListener('change', () => {
  for (const box of rows.querySelectorAll('input[type=checkbox]')) {
    box.checked = selectAll.checked;
    if (box.checked) selected.add(box.dataset.id); else selected.delete(box.dataset.id);
  }
  updateBulk();
});
form.addEventListener('submit', (event) => { event.preventDefault(); selected.clear(); updateBulk(); load(false); });
more.addEventListener('click', () => load(true));

me = await header('feed');
updateBulk();
await load(false);
connect();
loadPrecision();
