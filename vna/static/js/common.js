// Helpers shared by the viewer pages.  Everything that puts data into the page
// goes through el()/text(): strings become Text nodes (textContent), never HTML,
// because patient names and slide properties are untrusted input.

export const DICOMWEB = document.querySelector('meta[name="vna-dicomweb"]')?.content || '/dicom-web';

/** Build an element: el('a', {href: u, class: 'x'}, 'text', childNode, ...). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace the children of node (text is inserted as text). */
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

export class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let signingIn = false;

/** GET url and parse JSON; throws HttpError with the server's message on failure. */
export async function getJSON(url, accept = 'application/json') {
  const resp = await fetch(url, {headers: {Accept: accept}});
  if (resp.status === 401 && document.cookie.split(/;\s*/).includes('vna_share_mode=1')) {
    // seen through a share link: there is no account to sign in with
    throw new HttpError(401, 'This share link has expired or was revoked.');
  }
  if (resp.status === 401) {
    // not signed in (or the session expired): sign in, then come back to this very
    // view (hash included).  Several calls fail at once; one navigation is enough.
    const here = location.pathname + location.search + location.hash;
    if (!signingIn) location.assign(`/login?next=${encodeURIComponent(here)}`);
    signingIn = true;
    throw new HttpError(401, 'Sign in to see this.');
  }
  if (!resp.ok) {
    let message = `${resp.status} ${resp.statusText}`;
    try {
      const body = await resp.json();
      if (body && body.error) message = body.error;
    } catch { /* not JSON: keep the status line */ }
    throw new HttpError(resp.status, message);
  }
  if (resp.status === 204) return [];
  const body = await resp.text();
  return body ? JSON.parse(body) : [];
}

/** QIDO-RS search: path under the DICOMweb base, params as an object. */
export function qido(path, params = {}) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') query.append(key, value);
  }
  const qs = query.toString();
  return getJSON(`${DICOMWEB}${path}${qs ? '?' + qs : ''}`, 'application/dicom+json');
}

/** First value of a tag in a DICOM JSON object ('00100010'), as a display string. */
export function tagValue(obj, tag) {
  const attr = obj && obj[tag];
  if (!attr || !attr.Value || attr.Value.length === 0) return '';
  const value = attr.Value[0];
  if (value && typeof value === 'object') return personName(value);
  return String(value);
}

/** All values of a tag as strings. */
export function tagValues(obj, tag) {
  const attr = obj && obj[tag];
  return attr && attr.Value ? attr.Value.map(String) : [];
}

/** 'Doe^John' (or a PN JSON object) as 'Doe, John'. */
export function personName(value) {
  const raw = typeof value === 'string' ? value : (value.Alphabetic || value.Ideographic || value.Phonetic || '');
  const [family = '', given = '', middle = '', prefix = '', suffix = ''] = raw.split('^');
  const first = [prefix, given, middle].filter(Boolean).join(' ');
  return [family, first].filter(Boolean).join(', ') + (suffix ? ` ${suffix}` : '');
}

/** 'YYYYMMDD' as 'YYYY-MM-DD' (other forms unchanged). */
export function formatDate(value) {
  const s = String(value || '');
  return /^\d{8}$/.test(s) ? `${s.slice(0, 4)}-${s.slice(4, 6)}-${s.slice(6)}` : s;
}

/** A length in micrometres as '250 µm' or '1.5 mm'. */
export function formatLength(um) {
  if (!Number.isFinite(um)) return '';
  if (um >= 1000) return `${trim(um / 1000)} mm`;
  if (um >= 1) return `${trim(um)} µm`;
  return `${trim(um * 1000)} nm`;
}

function trim(x) {
  const digits = x >= 100 ? 0 : x >= 10 ? 1 : 2;
  return String(Number(x.toFixed(digits)));
}

/** Show an error message in the page's status line. */
export function showError(node, err) {
  node.classList.add('error');
  fill(node, err instanceof Error ? err.message : String(err));
}

/** True when a key event comes from a text field (shortcuts must not fire there). */
export function typing(event) {
  const t = event.target;
  return t instanceof HTMLElement && (t.isContentEditable || ['INPUT', 'SELECT', 'TEXTAREA'].includes(t.tagName))
    && !(t instanceof HTMLInputElement && t.type === 'range');
}
