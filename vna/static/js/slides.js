// Reading the slide JSON of GET /slides and GET /slides/{id}.  The fields follow
// vna's SlideRecord (id, name, status, width, height, mpp, properties, patient_*...);
// the accessors also accept the case fields grouped under "case" and OpenSlide's
// property names, so the viewer does not break when a field moves.

export function slideList(json) {
  if (Array.isArray(json)) return json;
  return json?.slides || json?.items || [];
}

const ALIASES = {
  patient_name: ['patient_name', 'PatientName'],
  patient_id: ['patient_id', 'PatientID'],
  accession_number: ['accession_number', 'accession', 'AccessionNumber'],
  specimen: ['specimen', 'specimen_id', 'SpecimenIdentifier'],
  study_instance_uid: ['study_instance_uid', 'study_uid', 'StudyInstanceUID'],
};

/** A case/identity field of a slide, wherever the server put it. */
export function slideField(slide, key) {
  for (const name of ALIASES[key] || [key]) {
    for (const holder of [slide, slide?.case, slide?.patient]) {
      const v = holder && holder[name];
      if (v !== undefined && v !== null && v !== '' && typeof v !== 'object') return String(v);
    }
  }
  return '';
}

function num(v) {
  const x = typeof v === 'number' ? v : parseFloat(v);
  return Number.isFinite(x) && x > 0 ? x : null;
}

/** Micrometres per pixel at level 0, [x, y]; nulls when the slide does not say. */
export function slideMpp(slide) {
  const p = slide?.properties || {};
  const m = slide?.mpp;
  const mx = Array.isArray(m) ? num(m[0]) : num(m) ?? num(slide?.mpp_x) ?? num(p['openslide.mpp-x']);
  const my = Array.isArray(m) ? num(m[1]) : num(slide?.mpp_y) ?? num(p['openslide.mpp-y']) ?? mx;
  return [mx, my ?? mx];
}

/** The scanner's objective power (e.g. 40), or one derived from the mpp (10 µm / mpp). */
export function objectivePower(slide) {
  const p = slide?.properties || {};
  const stated = num(slide?.objective_power) ?? num(p['openslide.objective-power']) ?? num(p['aperio.AppMag']);
  if (stated) return {power: stated, derived: false};
  const [mx] = slideMpp(slide);
  return mx ? {power: 10 / mx, derived: true} : null;
}

/** YYYY-MM-DD of when the slide was added (created_at is epoch seconds). */
export function slideDate(slide) {
  const t = num(slide?.created_at);
  return t ? new Date(t * 1000).toISOString().slice(0, 10) : '';
}

/** Which associated images the slide has; null when the server does not say. */
export function associatedImages(slide) {
  const a = slide?.associated ?? slide?.associated_images;
  if (Array.isArray(a)) return a.map(String);
  if (a && typeof a === 'object') return Object.keys(a);
  const listed = slide?.properties?.['vna.associated']; // what the pyramid build kept
  if (typeof listed === 'string') return listed.split(',').map((x) => x.trim()).filter(Boolean);
  const props = Object.keys(slide?.properties || {});
  const fromOpenSlide = props.map((k) => /^openslide\.associated\.([^.]+)\.width$/.exec(k)?.[1]).filter(Boolean);
  return fromOpenSlide.length ? fromOpenSlide : null;
}
