/* Line charts on <canvas> of the history the API returns for a range (RabbitMQ's `samples`:
 * newest first, one every `incr` seconds). Counts (queue lengths, memory) are drawn as they are;
 * counters (published, delivered...) as the rate between consecutive samples. So a chart opens
 * with the last minutes already drawn, and every refresh redraws it from the server's history.
 */
import { h, setText, num, rateText, bytes, compact, clock, get, S } from './lib.js';

/* [{t, v}] oldest first from a `*_details` object with samples; `asRate`: the rate between
 * consecutive samples (per second) at the later one's time. */
export function series(details, asRate) {
  const smp = (details && Array.isArray(details.samples)) ? details.samples : [];
  const pts = smp.map((s) => ({ t: s.timestamp, v: Number(s.sample) || 0 })).reverse();
  if (!asRate) return pts;
  const out = [];
  for (let i = 1; i < pts.length; i++) {
    const dt = (pts[i].t - pts[i - 1].t) / 1000;
    out.push({ t: pts[i].t, v: dt > 0 ? Math.max(0, (pts[i].v - pts[i - 1].v) / dt) : 0 });
  }
  return out;
}

/* The chart data of some figures of an object: {key: [{t, v}]} from obj[path + key + '_details']. */
export function chartData(obj, base, keys, asRate) {
  const out = {};
  for (const k of keys) out[k] = series(get(obj, (base ? base + '.' : '') + k + '_details'), asRate);
  return out;
}

/* The top of the y axis: four equal steps of 1, 2, 2.5 or 5 times a power of ten. */
function niceMax(v, integer) {
  if (!(v > 0)) return integer ? 4 : 1;
  let step = v / 4;
  const exp = Math.pow(10, Math.floor(Math.log10(step)));
  for (const m of [1, 2, 2.5, 5, 10]) if (step <= m * exp) { step = m * exp; break; }
  if (integer) step = Math.max(1, Math.ceil(step));
  return step * 4;
}

/* A line chart: `lines` is [{key, label, color}]; unit '/s' (rates), '' (counts), 'B' (bytes) or 'B/s'. */
export class Chart {
  constructor(title, hint, lines, unit, id) {
    this.lines = lines;
    this.unit = unit;
    this.data = {};
    this.canvas = h('canvas', { class: 'chart', id: id || null, 'data-chart': id || title });
    this.legendValues = {};
    const legend = h('div', { class: 'legend' }, lines.map((s) => {
      const b = h('b', { text: '–' });
      this.legendValues[s.key] = b;
      return h('span', { class: 'item', 'data-series': s.key },
        h('i', { style: 'background:' + s.color }), s.label + ' ', b);
    }));
    this.hint = h('span', { class: 'hint', text: hint });
    this.el = h('section', { class: 'panel chart-panel' },
      h('h2', null, title, this.hint),
      h('div', { class: 'chart-wrap' }, this.canvas), legend);
    this.onResize = () => this.draw();
    window.addEventListener('resize', this.onResize);
  }

  destroy() { window.removeEventListener('resize', this.onResize); }

  /* data: {key: [{t, v}] oldest first}; `current` overrides the legend's figures. */
  set(data, current) {
    this.data = data || {};
    this.current = current || null;
    this.draw();
  }

  fmt(v) {
    if (this.unit === '/s') return rateText(v);
    if (this.unit === 'B') return bytes(v);
    if (this.unit === 'B/s') return bytes(v) + '/s';
    return num(v);
  }

  draw() {
    const c = this.canvas;
    const w = c.clientWidth, hgt = c.clientHeight;
    for (const s of this.lines) {
      const pts = this.data[s.key] || [];
      const cur = this.current && typeof this.current[s.key] === 'number' ? this.current[s.key]
        : (pts.length ? pts[pts.length - 1].v : null);
      setText(this.legendValues[s.key], cur === null ? '–' : this.fmt(cur));
    }
    if (!w || !hgt) return;
    const dpr = window.devicePixelRatio || 1;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(hgt * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(hgt * dpr);
    }
    const ctx = c.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, hgt);
    const pad = { l: 56, r: 12, t: 10, b: 24 };
    const pw = w - pad.l - pad.r, ph = hgt - pad.t - pad.b;
    let max = 0, tmin = Infinity, tmax = -Infinity, n = 0;
    for (const s of this.lines) {
      for (const p of this.data[s.key] || []) {
        if (p.v > max) max = p.v;
        if (p.t < tmin) tmin = p.t;
        if (p.t > tmax) tmax = p.t;
        n++;
      }
    }
    if (!isFinite(tmin)) { tmax = Date.now(); tmin = tmax - S.rangeAge * 1000; }
    const ymax = niceMax(max * 1.05, this.unit === '' || this.unit === 'B');
    const span = Math.max(1000, tmax - tmin);
    const X = (tt) => pad.l + ((tt - tmin) / span) * pw;
    const Y = (v) => pad.t + ph - (v / ymax) * ph;

    // grid and axis labels
    ctx.font = '11px system-ui, "DejaVu Sans", sans-serif';
    ctx.textBaseline = 'middle';
    ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const v = (ymax / 4) * i;
      const y = Math.round(Y(v)) + 0.5;
      ctx.strokeStyle = i === 0 ? '#cfd5de' : '#eef1f5';
      ctx.beginPath(); ctx.moveTo(pad.l, y); ctx.lineTo(pad.l + pw, y); ctx.stroke();
      ctx.fillStyle = '#667085';
      ctx.textAlign = 'right';
      const label = this.unit === 'B' || this.unit === 'B/s' ? bytes(v).replace('.0 ', ' ') + (this.unit === 'B/s' ? '/s' : '')
        : compact(v) + (this.unit === '/s' ? '/s' : '');
      ctx.fillText(label, pad.l - 8, y);
    }
    ctx.textBaseline = 'top';
    for (let i = 0; i <= 3; i++) {
      const tt = tmin + (span / 3) * i;
      ctx.textAlign = i === 0 ? 'left' : i === 3 ? 'right' : 'center';
      ctx.fillText(clock(tt), X(tt), pad.t + ph + 7);
    }
    if (n < 2) {
      ctx.textAlign = 'center';
      ctx.textBaseline = 'middle';
      ctx.fillStyle = '#98a2b3';
      ctx.fillText('No history yet', pad.l + pw / 2, pad.t + ph / 2);
      return;
    }
    // series: a soft fill under each line, then the line
    for (const s of this.lines) {
      const pts = this.data[s.key] || [];
      if (pts.length < 2) continue;
      ctx.beginPath();
      pts.forEach((p, i) => { if (i === 0) ctx.moveTo(X(p.t), Y(p.v)); else ctx.lineTo(X(p.t), Y(p.v)); });
      ctx.lineTo(X(pts[pts.length - 1].t), Y(0));
      ctx.lineTo(X(pts[0].t), Y(0));
      ctx.closePath();
      ctx.globalAlpha = 0.08;
      ctx.fillStyle = s.color;
      ctx.fill();
      ctx.globalAlpha = 1;
    }
    ctx.lineJoin = 'round';
    ctx.lineCap = 'round';
    for (const s of this.lines.slice().reverse()) {    // the first series listed ends on top
      const pts = this.data[s.key] || [];
      if (pts.length < 2) continue;
      ctx.beginPath();
      pts.forEach((p, i) => { if (i === 0) ctx.moveTo(X(p.t), Y(p.v)); else ctx.lineTo(X(p.t), Y(p.v)); });
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 2;
      ctx.stroke();
    }
  }
}

export const RATE_SERIES = [
  { key: 'publish', label: 'Publish', color: '#e8590c' },
  { key: 'deliver_get', label: 'Deliver / get', color: '#2563eb' },
  { key: 'ack', label: 'Ack', color: '#16a34a' },
];
export const QUEUED_SERIES = [
  { key: 'messages_ready', label: 'Ready', color: '#7c3aed' },
  { key: 'messages_unacknowledged', label: 'Unacked', color: '#d97706' },
  { key: 'messages', label: 'Total', color: '#0f766e' },
];

export function rangeHint(what) {
  const m = Math.round(S.rangeAge / 60);
  return `${what} · last ${m === 1 ? 'minute' : m + ' minutes'}`;
}
