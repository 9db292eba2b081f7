/**
 * A small live line chart of throughput (published and delivered per second) on a canvas, drawn
 * by hand. Colours come from the canvas's CSS custom properties (`--published`, `--delivered`,
 * `--grid`, `--axis`), so the stylesheet owns the theme.
 */

/** The smallest "nice" number (1, 2, 5 × 10^n) at or above `value`. */
export function niceCeil(value) {
  if (!(value > 0)) return 1;
  const exp = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 5, 10]) if (m * exp >= value) return m * exp;
  return 10 * exp;
}

const SERIES = [
  { key: 'published', color: '--published', dash: [] },
  { key: 'delivered', color: '--delivered', dash: [6, 4] },
];

export class ThroughputChart {
  /** @param {HTMLCanvasElement} canvas */
  constructor(canvas) {
    this.canvas = canvas;
    this.history = [];
    if (typeof ResizeObserver === 'function') new ResizeObserver(() => this.draw()).observe(canvas);
  }

  /**
   * New samples (`[{ atMs, published, delivered }]`, one a second, oldest first, the last one the
   * second now running); redraws. The running second is left out: plotted half-counted, it would
   * show every line diving at the right edge.
   */
  update(history) {
    this.history = Array.isArray(history) ? history.slice(0, -1) : [];
    this.draw();
  }

  draw() {
    const { canvas } = this;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (width === 0 || height === 0) return;
    const dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
      canvas.width = Math.round(width * dpr);
      canvas.height = Math.round(height * dpr);
    }
    const ctx = canvas.getContext('2d');
    if (!ctx) return;
    const css = getComputedStyle(canvas);
    const color = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);

    const samples = this.history;
    const max = niceCeil(Math.max(1, ...samples.flatMap((s) => [s.published ?? 0, s.delivered ?? 0])));
    const font = `11px ${css.fontFamily || 'sans-serif'}`;
    ctx.font = font;
    const label = (v) => (Number.isInteger(v) ? String(v) : v.toFixed(1));
    const levels = [0, max / 2, max];
    const left = Math.ceil(Math.max(...levels.map((v) => ctx.measureText(label(v)).width))) + 10;
    const right = 8;
    const top = 8;
    const bottom = 20;
    const plotW = Math.max(1, width - left - right);
    const plotH = Math.max(1, height - top - bottom);
    const n = Math.max(samples.length, 2);
    const x = (i) => left + (i / (n - 1)) * plotW;
    const y = (v) => top + plotH - (v / max) * plotH;

    // Grid and axis labels.
    ctx.lineWidth = 1;
    ctx.strokeStyle = color('--grid', '#ddd');
    ctx.fillStyle = color('--axis', '#666');
    ctx.textBaseline = 'middle';
    ctx.textAlign = 'right';
    for (const v of levels) {
      const yy = Math.round(y(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(left, yy);
      ctx.lineTo(left + plotW, yy);
      ctx.stroke();
      ctx.fillText(label(v), left - 5, yy);
    }
    ctx.textBaseline = 'top';
    const seconds = samples.length;
    const ticks = seconds > 1 ? [0, Math.floor((seconds - 1) / 2), seconds - 1] : [];
    ticks.forEach((i, k) => {
      ctx.textAlign = k === 0 ? 'left' : k === ticks.length - 1 ? 'right' : 'center';
      ctx.fillText(`−${seconds - i} s`, x(i), top + plotH + 5);
    });

    // The two series.
    ctx.lineJoin = 'round';
    ctx.lineCap = 'round';
    for (const s of SERIES) {
      if (samples.length === 0) break;
      ctx.strokeStyle = color(s.color, s.key === 'published' ? '#2457c5' : '#1a8a52');
      ctx.lineWidth = 2;
      ctx.setLineDash(s.dash);
      ctx.beginPath();
      samples.forEach((sample, i) => {
        const px = x(i);
        const py = y(sample[s.key] ?? 0);
        if (i === 0) ctx.moveTo(px, py);
        else ctx.lineTo(px, py);
      });
      ctx.stroke();
    }
    ctx.setLineDash([]);
  }
}
