// A small line chart of message rates on a <canvas>: one line per series,
// a time axis over the last `windowSec` seconds, a y axis rounded up to a
// "nice" number. Samples are kept here, so the history survives view
// changes for as long as the page is open.

const PAD = { left: 52, right: 12, top: 10, bottom: 24 };

/** 1, 2, 5 x 10^n at or above x. */
function niceCeil(x) {
  if (x <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(x));
  for (const m of [1, 2, 5, 10]) if (m * p >= x) return m * p;
  return 10 * p;
}

function shortNum(n) {
  if (n >= 1e6) return `${+(n / 1e6).toFixed(1)}M`;
  if (n >= 1e3) return `${+(n / 1e3).toFixed(1)}k`;
  return `${+n.toFixed(1)}`;
}

export class RateChart {
  /**
   * @param series [{key, label, color}]
   * @param windowSec how much history is drawn
   */
  constructor(series, windowSec = 600) {
    this.series = series;
    this.windowSec = windowSec;
    this.samples = []; // {t: ms, v: {key: rate}}
    this.canvas = null;
    this.observer = new ResizeObserver(() => this.draw());
  }

  /** Draws into `canvas` from now on (the old one is dropped). */
  attach(canvas) {
    if (this.canvas) this.observer.unobserve(this.canvas);
    this.canvas = canvas;
    this.observer.observe(canvas);
    this.draw();
  }

  push(t, values) {
    this.samples.push({ t, v: values });
    const keep = t - this.windowSec * 1000 * 1.2;
    while (this.samples.length > 2 && this.samples[0].t < keep) this.samples.shift();
    this.draw();
  }

  latest() {
    return this.samples.at(-1)?.v ?? null;
  }

  draw() {
    const c = this.canvas;
    if (!c || !c.isConnected) return;
    const dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth;
    const hgt = c.clientHeight;
    if (w === 0 || hgt === 0) return;
    c.width = Math.round(w * dpr);
    c.height = Math.round(hgt * dpr);
    const g = c.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, hgt);
    const style = getComputedStyle(c);
    const ink = style.color || '#333';
    const grid = style.getPropertyValue('--grid').trim() || '#ddd';
    g.font = `11px ${style.fontFamily || 'sans-serif'}`;

    const now = this.samples.at(-1)?.t ?? Date.now();
    const t0 = now - this.windowSec * 1000;
    const visible = this.samples.filter((s) => s.t >= t0);
    let max = 0;
    for (const s of visible) for (const k of this.series) max = Math.max(max, s.v[k.key] || 0);
    const top = niceCeil(max * 1.05);
    const plotW = w - PAD.left - PAD.right;
    const plotH = hgt - PAD.top - PAD.bottom;
    const x = (t) => PAD.left + ((t - t0) / (now - t0)) * plotW;
    const y = (v) => PAD.top + plotH - (v / top) * plotH;

    // grid and y labels
    g.strokeStyle = grid;
    g.fillStyle = ink;
    g.lineWidth = 1;
    g.textAlign = 'right';
    g.textBaseline = 'middle';
    for (let i = 0; i <= 4; i += 1) {
      const v = (top * i) / 4;
      const yy = Math.round(y(v)) + 0.5;
      g.beginPath();
      g.moveTo(PAD.left, yy);
      g.lineTo(PAD.left + plotW, yy);
      g.stroke();
      g.fillText(`${shortNum(v)}/s`, PAD.left - 6, yy);
    }
    // x labels: minutes before now
    g.textAlign = 'center';
    g.textBaseline = 'top';
    const minutes = this.windowSec / 60;
    const step = minutes > 5 ? 2 : 1;
    for (let m = 0; m <= minutes; m += step) {
      const xx = x(now - m * 60000);
      g.fillText(m === 0 ? 'now' : `-${m}m`, Math.min(xx, w - 16), PAD.top + plotH + 6);
    }
    // lines: each narrower than the one before, so equal rates (publish =
    // deliver = ack in a steady flow) still show every colour
    g.lineJoin = 'round';
    this.series.forEach((s, n) => {
      g.lineWidth = Math.max(1.5, 4.5 - 1.5 * n);
      g.strokeStyle = s.color;
      g.beginPath();
      visible.forEach((p, i) => {
        const px = x(p.t);
        const py = y(p.v[s.key] || 0);
        if (i === 0) g.moveTo(px, py); else g.lineTo(px, py);
      });
      g.stroke();
      if (visible.length === 1) {
        g.fillStyle = s.color;
        g.fillRect(x(visible[0].t) - 2, y(visible[0].v[s.key] || 0) - 2, 4, 4);
      }
    });
  }
}
