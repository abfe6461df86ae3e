// The study and slide list at '/': one search form over QIDO-RS (studies) and
// GET /slides (filtered here, the slide list being small).  The search lives in
// the query string, so a search can be bookmarked like a viewer position.
import {
  DICOMWEB, el, fill, formatDate, getJSON, personName, qido, showError, tagValue, tagValues,
} from './common.js';
import {slideList, slideField, slideDate} from './slides.js';
import {decorateShared} from './share.js';

const form = document.getElementById('search');
const status = document.getElementById('status');
const FIELDS = {patient: 'q-patient', from: 'q-from', to: 'q-to', modality: 'q-modality'};
const STUDY_LIMIT = 200;
let pollTimer = null;
let generation = 0; // only the latest search may write its results
let allSlides = [];

function readForm() {
  const out = {};
  for (const [key, id] of Object.entries(FIELDS)) out[key] = document.getElementById(id).value.trim();
  return out;
}

function writeForm(criteria) {
  for (const [key, id] of Object.entries(FIELDS)) document.getElementById(id).value = criteria[key] || '';
}

function criteriaFromUrl() {
  const params = new URLSearchParams(location.search);
  return Object.fromEntries(Object.keys(FIELDS).map((k) => [k, params.get(k) || '']));
}

/** QIDO date range: YYYYMMDD-YYYYMMDD, either end open. */
function dateRange(from, to) {
  const d = (s) => s.replaceAll('-', '');
  if (!from && !to) return '';
  return `${d(from)}-${d(to)}`;
}

async function searchStudies(c) {
  const base = {
    StudyDate: dateRange(c.from, c.to),
    ModalitiesInStudy: c.modality,
    includefield: 'StudyDescription,ModalitiesInStudy,NumberOfStudyRelatedSeries,NumberOfStudyRelatedInstances',
    limit: STUDY_LIMIT,
  };
  if (!c.patient) return qido('/studies', base);
  // one box for name or ID: ask both ways and merge by StudyInstanceUID
  const pattern = `*${c.patient}*`;
  const [byName, byId] = await Promise.all([
    qido('/studies', {...base, PatientName: pattern}),
    qido('/studies', {...base, PatientID: pattern}),
  ]);
  const seen = new Map();
  for (const s of [...byName, ...byId]) seen.set(tagValue(s, '0020000D'), s);
  return [...seen.values()];
}

function studyRow(s) {
  const uid = tagValue(s, '0020000D');
  const href = `/studies/${encodeURIComponent(uid)}/view`;
  const thumb = el('img', {
    class: 'thumb', alt: '', loading: 'lazy', width: 64, height: 64,
    src: `${DICOMWEB}/studies/${encodeURIComponent(uid)}/thumbnail?viewport=64,64`,
  });
  const counts = `${tagValue(s, '00201206') || '?'} / ${tagValue(s, '00201208') || '?'}`;
  return el('tr', {dataset: {study: uid}},
    el('td', {}, el('a', {href, tabindex: -1}, thumb)),
    el('td', {}, el('a', {href, class: 'patient'}, tagValue(s, '00100010') || '(no name)')),
    el('td', {}, tagValue(s, '00100020')),
    el('td', {}, formatDate(tagValue(s, '00080020'))),
    el('td', {}, tagValue(s, '00081030')),
    el('td', {}, tagValues(s, '00080061').join(', ')),
    el('td', {}, tagValue(s, '00080050')),
    el('td', {}, counts));
}

function sortStudies(studies) {
  return studies.sort((a, b) => tagValue(b, '00080020').localeCompare(tagValue(a, '00080020')));
}

function slideMatches(s, c) {
  if (c.modality && c.modality !== 'SM') return false;
  if (c.patient) {
    const needle = c.patient.toLowerCase();
    const hay = ['patient_name', 'patient_id', 'name'].map((k) => String(slideField(s, k) || '').toLowerCase());
    if (!hay.some((h) => h.includes(needle))) return false;
  }
  const date = slideDate(s);
  if ((c.from || c.to) && !date) return false;
  if (c.from && date < c.from) return false;
  if (c.to && date > c.to) return false;
  return true;
}

function slideCard(s) {
  const id = String(s.id);
  const ready = s.status === 'ready';
  const href = `/slides/${encodeURIComponent(id)}/view`;
  const name = slideField(s, 'patient_name');
  const caseLine = [name && personName(name), slideField(s, 'patient_id')].filter(Boolean).join(' · ');
  const meta = [slideField(s, 'accession_number') && `Acc. ${slideField(s, 'accession_number')}`,
    slideField(s, 'specimen') && `Specimen ${slideField(s, 'specimen')}`].filter(Boolean).join(' · ');
  const size = s.width && s.height ? `${s.width} × ${s.height} px` : '';
  const statusText = ready ? '' : `${s.status}${s.status === 'building' ? ` ${Math.round((s.progress || 0) * 100)}%` : ''}`;
  const image = ready
    ? el('img', {class: 'thumb', alt: '', loading: 'lazy', src: `/slides/${encodeURIComponent(id)}/thumbnail?size=160`})
    : el('div', {class: 'thumb placeholder'}, statusText);
  const title = ready ? el('a', {href, class: 'slide-name'}, s.name || id) : el('span', {class: 'slide-name'}, s.name || id);
  return el('article', {class: `card ${ready ? '' : 'not-ready'}`, dataset: {slide: id, status: s.status}},
    ready ? el('a', {href, tabindex: -1}, image) : image,
    el('h3', {}, title),
    caseLine && el('p', {class: 'case'}, caseLine),
    meta && el('p', {class: 'meta'}, meta),
    el('p', {class: 'meta'}, [size, statusText, s.status === 'failed' ? s.reason : ''].filter(Boolean).join(' · ')));
}

async function showStudies(c, gen) {
  const tbody = document.querySelector('#studies tbody');
  const studies = sortStudies(await searchStudies(c));
  if (gen !== generation) return;
  fill(tbody, studies.map(studyRow));
  if (studies.length === 0) fill(tbody, el('tr', {}, el('td', {colspan: 8, class: 'empty'}, 'No studies match.')));
  fill(document.getElementById('studies-count'), `(${studies.length}${studies.length >= STUDY_LIMIT ? '+' : ''})`);
}

async function showSlides(c, gen) {
  const all = slideList(await getJSON('/slides'));
  if (gen !== generation) return;
  allSlides = all;
  const slides = all.filter((s) => slideMatches(s, c));
  const box = document.getElementById('slides');
  fill(box, slides.map(slideCard));
  if (slides.length === 0) fill(box, el('p', {class: 'empty'}, 'No slides match.'));
  fill(document.getElementById('slides-count'), `(${slides.length})`);
  // slides still being built: refresh until they are done
  clearTimeout(pollTimer);
  if (slides.some((s) => s.status === 'queued' || s.status === 'building')) {
    pollTimer = setTimeout(() => showSlides(c, gen).catch((e) => showError(status, e)), 3000);
  }
}

async function run(c) {
  const gen = ++generation;
  status.classList.remove('error');
  fill(status, 'Searching…');
  document.body.dataset.state = 'loading';
  const results = await Promise.allSettled([showStudies(c, gen), showSlides(c, gen)]);
  if (gen !== generation) return;
  const failed = results.map((r, i) => r.status === 'rejected' && `${['studies', 'slides'][i]}: ${r.reason.message}`)
    .filter(Boolean);
  if (failed.length) showError(status, `Search failed (${failed.join('; ')})`);
  else fill(status, '');
  linkSlidesToStudies();
  document.body.dataset.state = 'ready';
}

/** A study that holds a slide (DICOM WSI) links to the slide viewer too. */
function linkSlidesToStudies() {
  for (const s of allSlides) {
    const uid = slideField(s, 'study_instance_uid');
    const row = uid && document.querySelector(`#studies tr[data-study="${CSS.escape(uid)}"]`);
    if (!row || s.status !== 'ready') continue;
    row.cells[4].append(el('a', {class: 'slide-link', href: `/slides/${encodeURIComponent(s.id)}/view`},
      `Slide ${s.name || s.id}`));
  }
}

form.addEventListener('submit', (event) => {
  event.preventDefault();
  const c = readForm();
  const params = new URLSearchParams(Object.entries(c).filter(([, v]) => v));
  history.replaceState(null, '', params.toString() ? `?${params}` : location.pathname);
  run(c);
});
form.addEventListener('reset', () => {
  setTimeout(() => form.requestSubmit(), 0);
});

const initial = criteriaFromUrl();
writeForm(initial);
// through a share link there is nothing else to search (body.shared hides the form)
decorateShared().catch(() => {});
run(initial);
