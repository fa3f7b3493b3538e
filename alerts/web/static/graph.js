// The service graph: nodes grouped by namespace (preset positions: no force layout, so 10k
// edges render at once), edges coloured by mTLS status, lateral-movement edges highlighted,
// an "as of" time and slider, and an edge's series on click.
import cytoscape from './vendor/cytoscape.esm.min.js';
import {api, el, fmtTime, header, notify, seriesView} from './common.js';

const COLOURS = {'all-mtls': '#1f8a4c', mixed: '#e08a00', plaintext: '#d03b2f', unknown: '#9ca3af'};
const form = document.getElementById('controls');
const slider = document.getElementById('slider');
let cy = null;
let anchor = null; // the end of the first graph shown: the slider counts windows back from it
let refs = new Map();
let range = null;

function seconds(text) {
  const m = /^(\d+)([smhd])$/.exec(text);
  return m ? Number(m[1]) * {s: 1, m: 60, h: 3600, d: 86400}[m[2]] : 900;
}

// Namespaces on a grid of clusters; nodes of one namespace on a sunflower spiral: O(n).
function positions(nodes) {
  const groups = new Map();
  for (const n of nodes) {
    const ns = n.namespace || '(no namespace)';
    if (!groups.has(ns)) groups.set(ns, []);
    groups.get(ns).push(n);
  }
  const names = [...groups.keys()].sort();
  const spacing = 28;
  const radius = Math.max(...[...groups.values()].map((g) => spacing * Math.sqrt(g.length))) + 60;
  const cols = Math.ceil(Math.sqrt(names.length));
  const out = new Map();
  const labels = [];
  names.forEach((ns, i) => {
    const cx = (i % cols) * radius * 2.2, cy0 = Math.floor(i / cols) * radius * 2.2;
    labels.push({data: {id: `ns:${ns}`, label: ns, nslabel: 1}, position: {x: cx, y: cy0 - radius + 10},
                 selectable: false, grabbable: false, classes: 'nslabel'});
    groups.get(ns).forEach((n, j) => {
      const r = spacing * Math.sqrt(j + 0.5), a = j * 2.39996;
      out.set(n.id, {x: cx + r * Math.cos(a), y: cy0 + r * Math.sin(a)});
    });
  });
  return {out, labels};
}

function markKey(src, dst) { return `${src}\u0000${dst || ''}`; }

function elements(graph, marks) {
  const lateral = new Set(marks.map((m) => markKey(m.src, m.dst)));
  const sources = new Set(marks.filter((m) => !m.dst).map((m) => m.src));
  const {out, labels} = positions(graph.nodes);
  const nodes = graph.nodes.map((n) => ({
    data: {id: n.id, label: n.workload ? n.workload : n.id, kind: n.kind},
    position: out.get(n.id)}));
  const edges = graph.edges.map((e, i) => ({data: {
    id: `e${i}`, source: e.src, target: e.dst, colour: COLOURS[e.mtls_status] || COLOURS.unknown,
    mtls: e.mtls_status, requests: e.requests,
    lateral: lateral.has(markKey(e.src, e.dst)) || sources.has(e.src) ? 1 : 0}}));
  return {elements: [...labels, ...nodes, ...edges], lateral: edges.filter((e) => e.data.lateral).length};
}

function style(big) {
  return [
    {selector: 'node', style: {'background-color': '#64748b', width: 10, height: 10, label: 'data(label)',
                               'font-size': 8, 'min-zoomed-font-size': 9, 'text-valign': 'bottom'}},
    {selector: 'node[kind = "external"]', style: {'background-color': '#b45309', shape: 'diamond'}},
    {selector: 'node[kind = "service"]', style: {shape: 'round-rectangle'}},
    {selector: 'node.nslabel', style: {'background-opacity': 0, width: 1, height: 1, 'font-size': 16,
                                       'min-zoomed-font-size': 4, 'font-weight': 'bold', color: '#334155', events: 'no'}},
    {selector: 'edge', style: {'line-color': 'data(colour)', width: 1, opacity: 0.8,
                               'curve-style': big ? 'haystack' : 'bezier',
                               'target-arrow-shape': big ? 'none' : 'triangle', 'target-arrow-color': 'data(colour)',
                               'arrow-scale': 0.6}},
    {selector: 'edge[lateral = 1]', style: {'line-color': '#7b2cbf', 'target-arrow-color': '#7b2cbf', width: 4, opacity: 1,
                                            'z-index': 10}},
    {selector: 'edge:selected', style: {width: 6, 'line-color': '#111827'}},
  ];
}

async function showEdge(edge) {
  const src = edge.data('source'), dst = edge.data('target');
  document.getElementById('edge-hint').textContent = '';
  document.getElementById('edge-facts').replaceChildren(
    el('dt', {}, 'From'), el('dd', {class: 'mono'}, src), el('dt', {}, 'To'), el('dd', {class: 'mono'}, dst),
    el('dt', {}, 'mTLS'), el('dd', {}, edge.data('mtls')), el('dt', {}, 'Requests'), el('dd', {}, edge.data('requests')),
    el('dt', {}, 'Lateral alert'), el('dd', {}, edge.data('lateral') ? 'yes' : 'no'));
  const box = document.getElementById('edge-series');
  box.replaceChildren(el('p', {class: 'muted'}, 'loading…'));
  try {
    const q = new URLSearchParams({since: range.start, until: range.end});
    const series = await api(`/api/v1/edges/${refs.get(src)}/${refs.get(dst)}/series?${q}`);
    box.replaceChildren(seriesView(series));
  } catch (err) {
    box.replaceChildren(el('p', {class: 'error'}, err.message));
  }
}

async function load() {
  const win = document.getElementById('window').value;
  let at = document.getElementById('at').value.trim() || 'latest';
  const back = Number(slider.value);
  if (back && anchor) at = new Date(new Date(anchor).getTime() - back * seconds(win) * 1000).toISOString();
  document.getElementById('slider-text').textContent = back ? `${back} × ${win} earlier` : '';
  const params = new URLSearchParams({at, window: win, latency: 'false'});
  const ns = document.getElementById('namespace').value.trim();
  if (ns) params.set('namespace', ns);
  const stats = document.getElementById('stats');
  stats.textContent = 'loading…';
  const started = performance.now();
  let graph;
  try {
    graph = await api(`/api/v1/graph?${params}`);
  } catch (err) {
    stats.textContent = '';
    notify(err.message, 'error');
    return;
  }
  range = graph.range;
  if (!anchor) anchor = graph.range.end;
  const marks = await api(`/api/v1/alerts/edges?${new URLSearchParams({since: range.start, until: range.end})}`)
    .then((m) => m.edges).catch(() => []);
  refs = new Map(graph.nodes.map((n) => [n.id, n.ref]));
  const built = elements(graph, marks);
  const big = graph.edges.length > 2000;
  if (cy) cy.destroy();
  cy = cytoscape({
    container: document.getElementById('graph'), elements: built.elements, layout: {name: 'preset'},
    style: style(big), textureOnViewport: big, hideEdgesOnViewport: big, pixelRatio: big ? 1 : 'auto',
    motionBlur: false, boxSelectionEnabled: false, minZoom: 0.02, maxZoom: 4,
  });
  cy.fit(undefined, 20);
  cy.on('tap', 'edge', (event) => showEdge(event.target));
  window.__meshwatch = {...(window.__meshwatch || {}), graph: cy};
  const container = document.getElementById('graph');
  container.dataset.edges = String(graph.edges.length);
  container.dataset.lateral = String(built.lateral);
  const ms = Math.round(performance.now() - started);
  stats.textContent = `${graph.nodes.length} nodes, ${graph.edges.length} edges, ${built.lateral} lateral · ` +
    `${fmtTime(range.start)} – ${fmtTime(range.end)} · ${ms} ms` + (graph.note ? ` · ${graph.note}` : '');
}

form.addEventListener('submit', (event) => { event.preventDefault(); anchor = null; slider.value = '0'; load(); });
slider.addEventListener('change', () => load());
await header('graph');
await load();
