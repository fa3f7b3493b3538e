// One alert: summary, actions, neighbourhood graph, edge series, evidence, runbook, audit.
import cytoscape from './vendor/cytoscape.esm.min.js';
import {api, canAct, el, endpointText, fmtTime, header, notify, safeUrl, seriesView, severityBadge, statusBadge} from './common.js';

const alertId = decodeURIComponent(location.pathname.split('/').pop());
let me = null;

function facts(alert) {
  const items = [
    ['Severity', severityBadge(alert.severity)], ['Status', statusBadge(alert.status)],
    ['Detector', alert.detector], ['Score', Number(alert.score).toFixed(3)], ['Count', alert.count],
    ['First seen', fmtTime(alert.first_seen)], ['Last seen', fmtTime(alert.last_seen)],
    ['Source', endpointText(alert.source)], ['Source principal', alert.source.principal || ''],
    ['Source address', alert.source.address || ''], ['Destination', endpointText(alert.destination)],
    ['Assignee', alert.assignee || ''], ['MITRE ATT&CK', (alert.mitre || []).join(', ')],
    ['Alert id', alert.id], ['Fingerprint', alert.fingerprint],
  ];
  document.getElementById('facts').replaceChildren(...items.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
}

function evidence(alert) {
  const calls = alert.evidence.filter((e) => e && e.kind !== 'edge_series');
  const box = document.getElementById('evidence');
  if (!calls.length) { box.replaceChildren(el('p', {class: 'muted'}, 'No call evidence.')); return; }
  const keys = [...new Set(calls.flatMap((e) => Object.keys(e)))].filter((k) => calls.some((e) => e[k] !== null && e[k] !== undefined));
  const value = (v) => (v === null || v === undefined ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v));
  box.replaceChildren(el('table', {id: 'evidence-table'},
    el('thead', {}, el('tr', {}, keys.map((k) => el('th', {scope: 'col'}, k)))),
    el('tbody', {}, calls.map((e) => el('tr', {}, keys.map((k) => el('td', {class: 'wrap mono'}, value(e[k]))))))));
}

const EDGE_COLOURS = {'all-mtls': '#1f8a4c', mixed: '#e08a00', plaintext: '#d03b2f', unknown: '#9ca3af'};

function miniGraph(hood) {
  const container = document.getElementById('mini-graph');
  const elements = [
    ...hood.nodes.map((n) => ({data: {id: n.id, label: n.workload ? `${n.namespace || '?'}/${n.workload}` : n.id,
                                      endpoint: n.id === hood.alert_edge.src || n.id === hood.alert_edge.dst ? 1 : 0}})),
    ...hood.edges.map((e, i) => ({data: {id: `e${i}`, source: e.src, target: e.dst, colour: EDGE_COLOURS[e.mtls_status] || '#9ca3af',
                                         alerting: e.alerting ? 1 : 0}})),
  ];
  const src = hood.alert_edge.src, dst = hood.alert_edge.dst;
  if (src && dst && !hood.edges.some((e) => e.alerting)) {
    elements.push({data: {id: 'alerting', source: src, target: dst, colour: '#7b2cbf', alerting: 1}});
  }
  const cy = cytoscape({
    container, elements, maxZoom: 1.6,
    layout: {name: elements.length > 400 ? 'grid' : 'cose', animate: false},
    style: [
      {selector: 'node', style: {label: 'data(label)', 'font-size': 9, 'background-color': '#64748b', width: 14, height: 14,
                                 'text-wrap': 'ellipsis', 'text-max-width': 140}},
      {selector: 'node[endpoint = 1]', style: {'background-color': '#7b2cbf'}},
      {selector: 'edge', style: {'line-color': 'data(colour)', 'target-arrow-color': 'data(colour)', 'target-arrow-shape': 'triangle',
                                 'curve-style': 'bezier', width: 1.5}},
      {selector: 'edge[alerting = 1]', style: {'line-color': '#7b2cbf', 'target-arrow-color': '#7b2cbf', width: 5}},
    ],
  });
  window.__meshwatch = {...(window.__meshwatch || {}), mini: cy};
}

function runbook(alert) {
  const url = safeUrl(alert.runbook_url);
  const box = document.getElementById('runbook-link-box');
  const embed = document.getElementById('runbook');
  if (!url) {
    box.replaceChildren(el('span', {class: 'muted'}, 'No runbook link.'));
    embed.replaceChildren();
    return;
  }
  box.replaceChildren(el('a', {id: 'runbook-link', href: url, target: '_blank', rel: 'noopener noreferrer'},
                         'Open the runbook'));
  const u = new URL(url);
  if (u.origin === location.origin && u.pathname.startsWith('/runbooks/') && !embed.firstChild) {
    embed.replaceChildren(el('iframe', {class: 'runbook', src: u.pathname, title: 'Runbook', sandbox: ''}));
  }
}

function audit(entries) {
  const skip = new Set(['action_id', 'alert_id', 'ts', 'actor', 'action', 'comment']);
  document.querySelector('#audit tbody').replaceChildren(...(entries.length ? entries.map((e) => el('tr', {},
    el('td', {}, fmtTime(e.ts)), el('td', {}, e.actor), el('td', {}, e.action), el('td', {class: 'wrap'}, e.comment || ''),
    el('td', {class: 'wrap mono'}, Object.entries(e).filter(([k, v]) => !skip.has(k) && v !== null && v !== '')
      .map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : v}`).join('  '))))
    : [el('tr', {}, el('td', {colspan: 5, class: 'muted'}, 'No actions yet.'))]));
}

function buttons(alert) {
  const allowed = canAct(me);
  const state = {
    'act-acknowledge': alert.status !== 'acknowledged' && alert.status !== 'resolved',
    'act-resolve': alert.status !== 'resolved', 'act-reopen': alert.status !== 'open',
    'act-assign': true, 'act-suppress': alert.status !== 'resolved', 'act-feedback': true,
  };
  for (const [id, enabled] of Object.entries(state)) document.getElementById(id).disabled = !allowed || !enabled;
  const fb = alert.feedback;
  document.getElementById('feedback-state').textContent = fb
    ? `Feedback: ${fb.verdict} by ${fb.actor} at ${fmtTime(fb.ts)}${fb.rule_id ? ` (rule ${fb.rule_id})` : ''}` : '';
}

async function render() {
  const alert = await api(`/api/v1/alerts/${encodeURIComponent(alertId)}`);
  document.title = `meshwatch · ${alert.title}`;
  document.getElementById('title').replaceChildren(severityBadge(alert.severity), ' ', alert.title);
  document.getElementById('summary').textContent = alert.summary;
  facts(alert);
  evidence(alert);
  runbook(alert);
  audit(alert.audit);
  buttons(alert);
  document.getElementById('edge-name').textContent = alert.edge ? `${alert.edge.src} → ${alert.edge.dst}` : '';
  document.getElementById('series').replaceChildren(seriesView(alert.edge));
  return alert;
}

async function act(action, body) {
  const comment = document.getElementById('comment').value.trim();
  try {
    await api(`/api/v1/alerts/${encodeURIComponent(alertId)}/${action}`, {method: 'POST', body: {comment, ...body}});
    notify(`${action}: done`);
    document.getElementById('comment').value = '';
    await render();
  } catch (err) {
    notify(err.message, 'error');
  }
}

document.getElementById('act-acknowledge').addEventListener('click', () => act('acknowledge', {}));
document.getElementById('act-resolve').addEventListener('click', () => act('resolve', {}));
document.getElementById('act-reopen').addEventListener('click', () => act('reopen', {}));
document.getElementById('act-assign').addEventListener('click', () => act('assign', {assignee: document.getElementById('assignee').value.trim()}));
document.getElementById('act-suppress').addEventListener('click', () => {
  const comment = document.getElementById('comment').value.trim() || `suppressed from the alert page`;
  document.getElementById('comment').value = comment;
  act('suppress', {duration: document.getElementById('suppress-duration').value.trim()});
});
document.getElementById('act-feedback').addEventListener('click', () => act('feedback', {verdict: document.getElementById('verdict').value}));

me = await header('feed');
try {
  const alert = await render();
  miniGraph(alert.neighbourhood);
} catch (err) {
  document.getElementById('title').textContent = err.status === 404 ? 'No such alert' : 'Could not load the alert';
  notify(err.message, 'error');
}
