// A page seen through a share link, with no account.  The share session comes
// with a cookie scripts may read (vna_share_mode, no secret in it); the server
// alone decides what the page can reach.  Here the page only adapts: the brand
// link goes to the share's start page, the search (of other studies) is hidden,
// and a Download button appears when the share allows it.
import {el} from './common.js';

export const SHARED = document.cookie.split(/;\s*/).includes('vna_share_mode=1');

/** GET /share/info, or null when this page is not seen through a share. */
export async function shareInfo() {
  if (!SHARED) return null;
  const resp = await fetch('/share/info', {headers: {Accept: 'application/json'}});
  return resp.ok ? resp.json() : null;
}

/** Mark the page as shared (body.shared, data-share) and add the share's controls. */
export async function decorateShared() {
  const info = await shareInfo();
  if (!info) return null;
  document.body.classList.add('shared');
  document.body.dataset.share = info.kind;
  document.querySelector('.brand')?.setAttribute('href', info.home);
  const bar = document.querySelector('.topbar');
  const what = info.deidentified ? 'Shared (de-identified)' : 'Shared';
  bar.append(el('span', {class: 'share-note'}, `${what} until ${info.expires_at.slice(0, 10)}`));
  if (info.download_url) {
    bar.append(el('a', {id: 'share-download', class: 'button', href: info.download_url, download: ''}, 'Download'));
  }
  return info;
}

function csrfToken() {
  const found = document.cookie.split(/;\s*/).find((c) => c.startsWith('vna_csrf='));
  return found ? decodeURIComponent(found.slice('vna_csrf='.length)) : '';
}

/** For a signed-in user: a Share control in the top bar that makes a link for
 * ``what`` ({study: uid} or {slide: id}) with POST /api/shares.  Nothing is asked
 * of the server until the form is sent; a shared visitor never sees it. */
export function offerSharing(what) {
  if (SHARED) return;
  const result = el('p', {id: 'share-result', class: 'share-result', role: 'status'});
  const url = el('input', {id: 'share-url', readonly: true, hidden: true, 'aria-label': 'Share link'});
  const form = el('form', {id: 'share-form', class: 'share-form'},
    el('label', {}, 'Days ', el('input', {name: 'days', type: 'number', min: 1, max: 90, value: 7})),
    el('label', {}, 'PIN ', el('input', {name: 'pin', type: 'password', autocomplete: 'off', minlength: 4})),
    el('label', {}, el('input', {name: 'download', type: 'checkbox'}), ' allow download'),
    el('label', {}, el('input', {name: 'deidentify', type: 'checkbox'}), ' de-identify'),
    el('button', {type: 'submit'}, 'Make link'), url, result);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const f = new FormData(form);
    const body = {...what, expires_in: Math.round(Number(f.get('days') || 7) * 86400),
      download: f.has('download'), deidentify: f.has('deidentify')};
    if (f.get('pin')) body.pin = f.get('pin');
    const resp = await fetch('/api/shares', {method: 'POST', body: JSON.stringify(body),
      headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrfToken()}});
    const answer = await resp.json().catch(() => ({}));
    if (!resp.ok) {
      url.hidden = true;
      result.textContent = `Could not share: ${answer.error || resp.status}`;
      return;
    }
    url.value = answer.url;
    url.hidden = false;
    url.select();
    result.textContent = `Link valid until ${answer.expires_at}`;
  });
  const box = el('details', {class: 'share-box'}, el('summary', {id: 'share-open'}, 'Share'), form);
  document.querySelector('.topbar').append(box);
}
