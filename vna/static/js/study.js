// The series viewer at /studies/{uid}/view: series thumbnails, and one image at a
// time from WADO-RS rendered (the server applies the window), stepped through with
// the wheel, the arrow keys or the slider.
import {DICOMWEB, el, fill, formatDate, getJSON, qido, showError, tagValue, typing} from './common.js';
import {slideField, slideList} from './slides.js';
import {decorateShared, offerSharing} from './share.js';

const studyUid = decodeURIComponent(location.pathname.split('/')[2] || '');
const studyPath = `${DICOMWEB}/studies/${encodeURIComponent(studyUid)}`;
const img = document.getElementById('frame');
const slider = document.getElementById('slider');
const position = document.getElementById('position');
const status = document.getElementById('status');

// center/width in HU (CT); Default lets the server use the image's own VOI LUT/window
export const PRESETS = [
  {name: 'Default', window: null},
  {name: 'Soft tissue', window: [40, 400]},
  {name: 'Lung', window: [-600, 1500]},
  {name: 'Bone', window: [300, 1500]},
  {name: 'Brain', window: [40, 80]},
];

const state = {series: [], seriesIndex: -1, frames: [], index: 0, preset: PRESETS[0]};

function seriesPath(s) {
  return `${studyPath}/series/${encodeURIComponent(tagValue(s, '0020000E'))}`;
}

function frameUrl(frame, preset = state.preset) {
  const series = state.series[state.seriesIndex];
  let url = `${seriesPath(series)}/instances/${encodeURIComponent(frame.sop)}`;
  if (frame.frame) url += `/frames/${frame.frame}`;
  url += '/rendered';
  return preset.window ? `${url}?window=${encodeURIComponent(preset.window.join(','))}` : url;
}

function show(index) {
  if (state.frames.length === 0) return;
  state.index = Math.max(0, Math.min(state.frames.length - 1, index));
  const frame = state.frames[state.index];
  img.src = frameUrl(frame);
  img.alt = `image ${state.index + 1} of ${state.frames.length}`;
  img.dataset.index = String(state.index);
  slider.value = String(state.index + 1);
  const where = frame.frame ? `instance ${frame.number}, frame ${frame.frame}` : `instance ${frame.number}`;
  fill(position, `${state.index + 1} / ${state.frames.length} · ${where}`);
  writeHash();
  // warm the cache for the neighbours so scrolling does not wait on the server
  for (const n of [state.index + 1, state.index - 1]) {
    if (n >= 0 && n < state.frames.length) new Image().src = frameUrl(state.frames[n]);
  }
}

function framesOf(instances) {
  const sorted = instances
    .map((i) => ({sop: tagValue(i, '00080018'), number: parseInt(tagValue(i, '00200013'), 10) || 0,
      count: parseInt(tagValue(i, '00280008'), 10) || 1}))
    .sort((a, b) => a.number - b.number || a.sop.localeCompare(b.sop));
  return sorted.flatMap((i) => (i.count > 1
    ? Array.from({length: i.count}, (_, k) => ({...i, frame: k + 1}))
    : [{...i, frame: null}]));
}

/** The view in the address (#series=UID&image=N&window=lung), so it can be shared. */
function writeHash() {
  const series = state.series[state.seriesIndex];
  const params = new URLSearchParams({series: tagValue(series, '0020000E'), image: String(state.index + 1)});
  if (state.preset.window) params.set('window', state.preset.name.toLowerCase());
  const hash = `#${params}`;
  if (hash !== location.hash) history.replaceState(null, '', hash);
}

function readHash() {
  const params = new URLSearchParams(location.hash.replace(/^#/, ''));
  const image = parseInt(params.get('image'), 10);
  const preset = PRESETS.find((p) => p.name.toLowerCase() === (params.get('window') || '').toLowerCase());
  return {series: params.get('series'), image: Number.isFinite(image) ? image - 1 : null, preset};
}

async function selectSeries(index, image = null) {
  if (index < 0 || index >= state.series.length) return;
  state.seriesIndex = index;
  for (const [i, b] of [...document.querySelectorAll('#series button')].entries()) {
    b.setAttribute('aria-current', i === index ? 'true' : 'false');
  }
  const s = state.series[index];
  // the presets are Hounsfield windows: they mean nothing on MR, US...
  const hu = tagValue(s, '00080060') === 'CT';
  for (const b of document.querySelectorAll('#presets button')) {
    b.disabled = !hu && b.dataset.preset !== PRESETS[0].name;
  }
  if (!hu) setPreset(PRESETS[0], false);
  document.body.dataset.series = tagValue(s, '0020000E');
  if (tagValue(s, '00080060') === 'SM') return showWholeSlide(s);
  hideWholeSlide();
  const instances = await qido(`/studies/${encodeURIComponent(studyUid)}/series/${encodeURIComponent(tagValue(s, '0020000E'))}/instances`,
    {includefield: 'InstanceNumber,NumberOfFrames'});
  state.frames = framesOf(instances);
  slider.max = String(Math.max(1, state.frames.length));
  show(image ?? Math.floor(state.frames.length / 2));
}

/** A whole-slide image is a pyramid of tiles, not images to step through: send it
 *  to the slide viewer when vna has built it as a slide. */
async function showWholeSlide(series) {
  const uid = tagValue(series, '0020000E');
  state.frames = [];
  img.hidden = true;
  document.querySelector('.frame-tools').hidden = true; // no windows or images to step through
  fill(position, '');
  const box = document.getElementById('wsi');
  box.hidden = false;
  let slide = null;
  try {
    slide = slideList(await getJSON('/slides')).find((x) => slideField(x, 'series_instance_uid') === uid);
  } catch (err) {
    showError(status, err);
  }
  if (slide && slide.status === 'ready') {
    fill(box, 'Whole-slide image: ', el('a', {href: `/slides/${encodeURIComponent(slide.id)}/view`, id: 'wsi-link'},
      `open ${slide.name || slide.id} in the slide viewer`));
  } else {
    fill(box, `Whole-slide image${slide ? ` (slide ${slide.status})` : ''}: not viewable as a slide yet.`);
  }
}

function hideWholeSlide() {
  img.hidden = false;
  document.querySelector('.frame-tools').hidden = false;
  document.getElementById('wsi').hidden = true;
}

function count(n, noun) {
  return n === '' ? `? ${noun}s` : `${n} ${noun}${n === '1' ? '' : 's'}`;
}

function seriesButton(s, index) {
  const label = [tagValue(s, '00080060'), tagValue(s, '0008103E') || `Series ${tagValue(s, '00200011')}`].filter(Boolean).join(' · ');
  return el('button', {type: 'button', class: 'series-item', dataset: {series: tagValue(s, '0020000E')},
    onclick: () => selectSeries(index).catch((e) => showError(status, e))},
  el('img', {src: `${seriesPath(s)}/thumbnail`, alt: '', width: 128, height: 128, loading: 'lazy'}),
  el('span', {}, label),
  el('span', {class: 'meta'}, count(tagValue(s, '00201209'), 'image')));
}

function setPreset(preset, redraw = true) {
  const button = document.querySelector(`#presets button[data-preset="${preset.name}"]`);
  if (button?.disabled) return;
  state.preset = preset;
  for (const b of document.querySelectorAll('#presets button')) b.setAttribute('aria-pressed', String(b.dataset.preset === preset.name));
  if (redraw) show(state.index);
}

function bindControls() {
  fill(document.getElementById('presets'), PRESETS.map((p, i) => el('button', {
    type: 'button', dataset: {preset: p.name}, 'aria-pressed': String(p === state.preset),
    title: `${p.window ? `center ${p.window[0]}, width ${p.window[1]}` : "the image's own window"} (${i + 1})`,
    onclick: () => setPreset(p),
  }, p.name)));
  slider.addEventListener('input', () => show(parseInt(slider.value, 10) - 1));
  document.getElementById('frame-box').addEventListener('wheel', (event) => {
    event.preventDefault();
    if (event.deltaY !== 0) show(state.index + Math.sign(event.deltaY));
  }, {passive: false});
  const keys = {
    ArrowDown: () => show(state.index + 1), ArrowRight: () => show(state.index + 1),
    ArrowUp: () => show(state.index - 1), ArrowLeft: () => show(state.index - 1),
    Home: () => show(0), End: () => show(state.frames.length - 1),
    PageDown: () => selectSeries(state.seriesIndex + 1), PageUp: () => selectSeries(state.seriesIndex - 1),
  };
  PRESETS.forEach((p, i) => { keys[String(i + 1)] = () => setPreset(p); });
  window.addEventListener('keydown', (event) => {
    const action = keys[event.key];
    if (!action || typing(event) || event.ctrlKey || event.metaKey || event.altKey) return;
    event.preventDefault();
    Promise.resolve(action()).catch((e) => showError(status, e));
  });
  img.addEventListener('error', () => showError(status, `Image ${state.index + 1} could not be rendered.`));
  img.addEventListener('load', () => { status.classList.remove('error'); fill(status, ''); });
}

async function showStudy() {
  const [study] = await qido('/studies', {StudyInstanceUID: studyUid, includefield: 'StudyDescription'});
  if (!study) throw new Error('Study not found.');
  const title = tagValue(study, '00081030') || 'Study';
  document.title = `${title} — vna`;
  fill(document.getElementById('title'), title);
  fill(document.getElementById('study-info'), [tagValue(study, '00100010'), tagValue(study, '00100020'),
    formatDate(tagValue(study, '00080020')), tagValue(study, '00080050') && `Acc. ${tagValue(study, '00080050')}`]
    .filter(Boolean).join(' · '));
}

async function main() {
  if (!studyUid) throw new Error('no study UID in the address');
  bindControls();
  const [, series] = await Promise.all([showStudy(), qido(`/studies/${encodeURIComponent(studyUid)}/series`)]);
  state.series = series.sort((a, b) => (parseInt(tagValue(a, '00200011'), 10) || 0) - (parseInt(tagValue(b, '00200011'), 10) || 0));
  fill(document.getElementById('series'), state.series.map(seriesButton));
  if (state.series.length === 0) throw new Error('This study has no series.');
  const wanted = readHash();
  const found = state.series.findIndex((x) => tagValue(x, '0020000E') === wanted.series);
  if (wanted.preset) setPreset(wanted.preset, false);
  await selectSeries(Math.max(0, found), found >= 0 ? wanted.image : null);
  document.body.dataset.state = 'ready';
}

decorateShared().catch(() => {});
offerSharing({study: studyUid});
main().catch((err) => {
  document.body.dataset.state = 'error';
  showError(status, err);
});
