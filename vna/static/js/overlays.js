// Overlays drawn over OpenSeadragon from the slide's physical pixel size: a scale
// bar, the magnification read-out and a ruler.  They only read the viewport, so
// they work with any OSD drawer.
import {fill, formatLength} from './common.js';

const NICE = [1, 2, 5];
const SVG = 'http://www.w3.org/2000/svg';

/** Screen (CSS) pixels per level-0 image pixel at the current zoom. */
export function imageZoom(viewer) {
  return viewer.viewport.viewportToImageZoom(viewer.viewport.getZoom(true));
}

/** The largest 1/2/5×10^k length (µm) not longer than maxUm. */
export function niceLength(maxUm) {
  let best = 0;
  for (let k = Math.floor(Math.log10(maxUm)) - 1; k <= Math.ceil(Math.log10(maxUm)); k++) {
    for (const n of NICE) {
      const len = n * 10 ** k;
      if (len <= maxUm && len > best) best = len;
    }
  }
  return best;
}

export class ScaleBar {
  constructor(node, mppX, maxPx = 160) {
    this.node = node;
    this.bar = node.querySelector('.bar');
    this.label = node.querySelector('.label');
    this.mpp = mppX;
    this.maxPx = maxPx;
  }

  update(viewer) {
    if (!this.mpp) return;
    const umPerPx = this.mpp / imageZoom(viewer);
    const length = niceLength(this.maxPx * umPerPx);
    if (!(length > 0)) return;
    this.bar.style.width = `${Math.round(length / umPerPx)}px`;
    fill(this.label, formatLength(length));
    this.node.hidden = false;
  }
}

/** '10×' from the objective power and how many screen pixels an image pixel covers. */
export function magnification(power, zoom) {
  const m = power * zoom;
  const digits = m >= 10 ? 0 : m >= 1 ? 1 : 2;
  return `${Number(m.toFixed(digits))}×`;
}

/** Click-drag to measure; the segment stays anchored to the image while panning. */
export class Ruler {
  constructor(viewer, layer, readout, mpp) {
    this.viewer = viewer;
    this.layer = layer;
    this.readout = readout;
    this.mpp = mpp; // [x, y] µm per pixel, or [null, null]
    this.active = false;
    this.start = null; // image coordinates
    this.end = null;
    this.line = document.createElementNS(SVG, 'line');
    this.text = document.createElementNS(SVG, 'text');
    this.layer.append(this.line, this.text);
    layer.addEventListener('pointerdown', (e) => this.down(e));
    layer.addEventListener('pointermove', (e) => this.move(e));
    layer.addEventListener('pointerup', (e) => this.up(e));
    viewer.addHandler('update-viewport', () => this.draw());
  }

  toggle(on = !this.active) {
    this.active = on;
    this.layer.classList.toggle('active', on);
    return on;
  }

  clear() {
    this.start = this.end = null;
    this.readout.hidden = true;
    this.draw();
  }

  toImage(event) {
    const rect = this.layer.getBoundingClientRect();
    const p = new OpenSeadragon.Point(event.clientX - rect.left, event.clientY - rect.top);
    return this.viewer.viewport.viewerElementToImageCoordinates(p);
  }

  down(event) {
    if (!this.active || event.button !== 0) return;
    this.layer.setPointerCapture(event.pointerId);
    this.start = this.end = this.toImage(event);
    this.dragging = true;
    this.draw();
  }

  move(event) {
    if (!this.dragging) return;
    this.end = this.toImage(event);
    this.draw();
  }

  up(event) {
    if (!this.dragging) return;
    this.dragging = false;
    this.end = this.toImage(event);
    this.draw();
  }

  /** Distance between the end points in µm, or in pixels when the mpp is unknown. */
  length() {
    const dx = this.end.x - this.start.x;
    const dy = this.end.y - this.start.y;
    const [mx, my] = this.mpp;
    if (mx && my) return {um: Math.hypot(dx * mx, dy * my)};
    return {px: Math.hypot(dx, dy)};
  }

  draw() {
    const show = this.start && this.end;
    this.line.style.display = this.text.style.display = show ? '' : 'none';
    if (!show) return;
    const vp = this.viewer.viewport;
    const a = vp.imageToViewerElementCoordinates(this.start);
    const b = vp.imageToViewerElementCoordinates(this.end);
    for (const [k, v] of Object.entries({x1: a.x, y1: a.y, x2: b.x, y2: b.y})) this.line.setAttribute(k, v);
    const len = this.length();
    const label = len.um !== undefined ? formatLength(len.um) : `${Math.round(len.px)} px`;
    this.text.setAttribute('x', (a.x + b.x) / 2 + 8);
    this.text.setAttribute('y', (a.y + b.y) / 2 - 8);
    this.text.textContent = label;
    fill(this.readout, `Ruler: ${label}`);
    this.readout.dataset.um = len.um ?? '';
    this.readout.hidden = false;
  }
}
