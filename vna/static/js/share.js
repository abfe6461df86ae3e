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
