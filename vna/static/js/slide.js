// The slide viewer at /slides/{id}/view: OpenSeadragon over the slide's Deep Zoom
// tiles.  The view (centre x, y in level-0 pixels, z = screen pixels per image pixel)
// lives in the URL hash, so the address bar is always a shareable link to it.
import {el, fill, getJSON, personName, showError, typing} from './common.js';
import {associatedImages, objectivePower, slideField, slideMpp} from './slides.js';
import {imageZoom, magnification, Ruler, ScaleBar} from './overlays.js';
import {decorateShared, offerSharing} from './share.js';

const slideId = decodeURIComponent(location.pathname.split('/')[2] || '');
const base = `/slides/${encodeURIComponent(slideId)}`;
const status = document.getElementById('status');
const wrap = document.getElementById('viewer-wrap');
const POLL_MS = 2000;

/** {x, y, z} from '#x=..&y=..&z=..', or null when absent or malformed. */
export function parseHash(hash) {
  const p = new URLSearchParams(hash.replace(/^#/, ''));
  const v = ['x', 'y', 'z'].map((k) => parseFloat(p.get(k)));
  return v.every(Number.isFinite) && v[2] > 0 ? {x: v[0], y: v[1], z: v[2]} : null;
}

function currentHash(viewer) {
  const vp = viewer.viewport;
  const c = vp.viewportToImageCoordinates(vp.getCenter(true));
  const z = imageZoom(viewer);
  return `#x=${Math.round(c.x)}&y=${Math.round(c.y)}&z=${Number(z.toPrecision(4))}`;
}

function applyHash(viewer, state, immediately = true) {
  const vp = viewer.viewport;
  vp.zoomTo(vp.imageToViewportZoom(state.z), null, immediately);
  vp.panTo(vp.imageToViewportCoordinates(state.x, state.y), immediately);
}

async function waitUntilReady() {
  for (;;) {
    const slide = await getJSON(base);
    if (slide.status === 'ready') return slide;
    if (slide.status === 'failed') throw new Error(`This slide could not be built: ${slide.reason || 'unknown reason'}`);
    fill(status, `Slide is ${slide.status}${slide.progress ? ` (${Math.round(slide.progress * 100)}%)` : ''}…`);
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

function showCase(slide) {
  const study = slideField(slide, 'study_instance_uid');
  const rows = [
    ['Patient', slideField(slide, 'patient_name') && personName(slideField(slide, 'patient_name'))],
    ['Patient ID', slideField(slide, 'patient_id')],
    ['Accession', slideField(slide, 'accession_number')],
    ['Specimen', slideField(slide, 'specimen')],
    ['Study', study && el('a', {href: `/studies/${encodeURIComponent(study)}/view`}, study)],
  ].filter(([, v]) => v);
  const dl = document.getElementById('case');
  if (rows.length === 0) return fill(dl, el('dd', {class: 'empty'}, 'No case information.'));
  fill(dl, rows.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
}

function showAssociated(slide) {
  const listed = associatedImages(slide);
  const names = ['thumbnail', 'label', 'macro'].filter((n) => n === 'thumbnail' || !listed || listed.includes(n));
  fill(document.getElementById('associated'), names.map((name) => {
    const src = `${base}/${name}?size=240`;
    const img = el('img', {src, alt: `${name} image`, dataset: {kind: name}});
    const fig = el('figure', {}, el('a', {href: `${base}/${name}?size=1024`, target: '_blank', rel: 'noopener'}, img),
      el('figcaption', {}, name));
    img.addEventListener('error', () => fig.remove());
    return fig;
  }));
}

function showProperties(slide) {
  const [mx, my] = slideMpp(slide);
  const obj = objectivePower(slide);
  const basic = {
    Name: slide.name, 'Slide ID': slide.id, Size: `${slide.width} × ${slide.height} px`,
    Levels: slide.levels, 'Tile size': slide.tile_size,
    'µm / pixel': mx ? `${mx} × ${my}` : 'unknown',
    Objective: obj ? `${Number(obj.power.toFixed(1))}×${obj.derived ? ' (from µm/pixel)' : ''}` : 'unknown',
    Source: slide.source,
  };
  const rows = [...Object.entries(basic), ...Object.entries(slide.properties || {}).sort(([a], [b]) => a.localeCompare(b))]
    .filter(([, v]) => v !== undefined && v !== null && v !== '');
  const tbody = document.querySelector('#props tbody');
  fill(tbody, rows.map(([k, v]) => el('tr', {}, el('th', {}, k), el('td', {}, typeof v === 'object' ? JSON.stringify(v) : v))));
  document.getElementById('prop-filter').addEventListener('input', (e) => {
    const needle = e.target.value.toLowerCase();
    for (const tr of tbody.rows) tr.hidden = needle && !tr.textContent.toLowerCase().includes(needle);
  });
}

/** OSD injects an inline <style> (a touch-screen focus rule, kept in viewer.css)
 *  unless an element matching style[data-openseadragon-mobile-css] exists.  The CSP
 *  blocks (and reports) any inline style, even an empty one, so the marker is a
 *  'style' element of a private namespace: it matches the selector and is inert. */
function markOsdStyleInjected() {
  if (document.querySelector('style[data-openseadragon-mobile-css]')) return;
  const marker = document.createElementNS('urn:x-vna:marker', 'style');
  marker.setAttribute('data-openseadragon-mobile-css', 'true');
  document.head.append(marker);
}

function makeViewer(slide) {
  markOsdStyleInjected();
  return OpenSeadragon({
    element: document.getElementById('osd'),
    prefixUrl: '/static/vendor/openseadragon/images/',
    // the build id rides along on every tile URL (OpenSeadragon copies the .dzi's
    // query string): tiles are cached immutable, and a rebuild must not show stale ones
    tileSources: `${base}.dzi?build=${encodeURIComponent(slide.build_id || '')}`,
    // the WebGL drawer is software-rendered on GPU-less machines: ~200 ms a tile
    drawer: 'canvas',
    showNavigator: true,
    navigatorPosition: 'BOTTOM_RIGHT',
    navigatorSizeRatio: 0.18,
    showNavigationControl: false, // the toolbar above has the same buttons
    keyboardNavEnabled: false, // our keys (f = full screen, r = ruler) differ from OSD's
    gestureSettingsMouse: {clickToZoom: false, dblClickToZoom: true},
    visibilityRatio: 0.5,
    constrainDuringPan: true,
    maxZoomPixelRatio: 4,
    minZoomImageRatio: 0.5,
    blendTime: 0,
    timeout: 60000,
  });
}

function fullscreen() {
  if (document.fullscreenElement) return document.exitFullscreen();
  return wrap.requestFullscreen();
}

function bindKeys(viewer, ruler) {
  const vp = viewer.viewport;
  const pan = (fx, fy) => {
    const b = vp.getBounds();
    vp.panBy(new OpenSeadragon.Point(b.width * fx, b.height * fy));
    vp.applyConstraints();
  };
  const actions = {
    ArrowLeft: () => pan(-0.2, 0), ArrowRight: () => pan(0.2, 0),
    ArrowUp: () => pan(0, -0.2), ArrowDown: () => pan(0, 0.2),
    '+': () => vp.zoomBy(1.5), '=': () => vp.zoomBy(1.5),
    '-': () => vp.zoomBy(1 / 1.5), _: () => vp.zoomBy(1 / 1.5),
    0: () => vp.goHome(),
    f: () => fullscreen(), F: () => fullscreen(),
    r: () => setRuler(ruler), R: () => setRuler(ruler),
    Escape: () => { ruler.clear(); setRuler(ruler, false); },
  };
  // capture phase: OSD's canvas must not see keys we answer
  window.addEventListener('keydown', (event) => {
    const action = actions[event.key];
    if (!action || typing(event) || event.ctrlKey || event.metaKey || event.altKey) return;
    event.preventDefault();
    event.stopPropagation();
    action();
  }, true);
  document.getElementById('zoom-in').addEventListener('click', actions['+']);
  document.getElementById('zoom-out').addEventListener('click', actions['-']);
  document.getElementById('home').addEventListener('click', actions[0]);
  document.getElementById('ruler').addEventListener('click', actions.r);
  document.getElementById('fullscreen').addEventListener('click', actions.f);
  document.getElementById('copy-link').addEventListener('click', () => navigator.clipboard?.writeText(location.href));
}

function setRuler(ruler, on) {
  const active = ruler.toggle(on);
  document.getElementById('ruler').setAttribute('aria-pressed', String(active));
  document.body.classList.toggle('measuring', active);
}

function trackView(viewer, slide) {
  const scale = new ScaleBar(document.getElementById('scalebar'), slideMpp(slide)[0]);
  const obj = objectivePower(slide);
  const mag = document.getElementById('mag');
  const zoomText = document.getElementById('zoom');
  const update = () => {
    const z = imageZoom(viewer);
    scale.update(viewer);
    fill(mag, obj ? magnification(obj.power, z) : '');
    mag.title = obj?.derived ? 'estimated from µm/pixel' : 'from the objective power';
    fill(zoomText, `${Number((z * 100).toPrecision(3))}%`);
  };
  viewer.addHandler('update-viewport', update);
  // the hash follows the view once it settles; replaceState keeps history clean
  viewer.addHandler('animation-finish', () => {
    const hash = currentHash(viewer);
    if (hash !== location.hash) history.replaceState(null, '', hash);
    update();
  });
  window.addEventListener('hashchange', () => {
    const state = parseHash(location.hash);
    if (state) applyHash(viewer, state, false);
  });
  update();
}

async function main() {
  if (!slideId) throw new Error('no slide id in the address');
  fill(status, 'Loading…');
  const slide = await waitUntilReady();
  document.title = `${slide.name || slide.id} — vna`;
  fill(document.getElementById('title'), slide.name || slide.id);
  showCase(slide);
  showAssociated(slide);
  showProperties(slide);
  const viewer = makeViewer(slide);
  window.vna = {viewer, slide}; // for debugging and the browser tests
  const ruler = new Ruler(viewer, document.getElementById('ruler-layer'), document.getElementById('ruler-readout'), slideMpp(slide));
  viewer.addOnceHandler('open', () => {
    const state = parseHash(location.hash);
    if (state) applyHash(viewer, state);
    trackView(viewer, slide);
    bindKeys(viewer, ruler);
    fill(status, '');
    document.body.dataset.state = 'ready';
    const item = viewer.world.getItemAt(0);
    item.addHandler('fully-loaded-change', (e) => { document.body.dataset.fullyLoaded = String(e.fullyLoaded); });
  });
  viewer.addHandler('open-failed', (e) => showError(status, `Could not open the slide: ${e.message}`));
}

decorateShared().catch(() => {});
offerSharing({slide: slideId});
main().catch((err) => {
  document.body.dataset.state = 'error';
  showError(status, err);
});
