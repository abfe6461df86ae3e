// The list page: what it shows, and what each search narrows it to.
import {join} from 'node:path';

export async function waitReady(page) {
  await page.waitForFunction(() => ['ready', 'error'].includes(document.body.dataset.state));
}

async function listed(page) {
  return page.evaluate(() => ({
    studies: [...document.querySelectorAll('#studies tbody tr[data-study]')].map((tr) => ({
      uid: tr.dataset.study,
      patient: tr.querySelector('.patient').textContent,
      cells: [...tr.cells].map((td) => td.textContent),
      href: tr.querySelector('a.patient').getAttribute('href'),
    })),
    slides: [...document.querySelectorAll('#slides [data-slide]')].map((card) => ({
      id: card.dataset.slide,
      status: card.dataset.status,
      text: card.textContent,
      caseLine: card.querySelector('.case')?.textContent || '',
      href: card.querySelector('a.slide-name')?.getAttribute('href') || null,
    })),
    status: document.getElementById('status').textContent,
    // elements a hostile patient name would create if it were parsed as HTML
    injected: document.querySelectorAll('main b, main script, main img[src="x"], main [onerror]').length,
  }));
}

/** Fill the form, submit it, wait for both lists. */
async function search(page, fields) {
  const all = {'q-patient': '', 'q-from': '', 'q-to': '', 'q-modality': '', ...fields};
  for (const [id, value] of Object.entries(all)) {
    if (id === 'q-modality') await page.selectOption(`#${id}`, value);
    else await page.fill(`#${id}`, value);
  }
  await page.click('button[type="submit"]');
  await waitReady(page);
  const out = await listed(page);
  return {studies: out.studies.map((s) => s.uid), slides: out.slides.map((s) => s.id), url: page.url(), status: out.status};
}

function yyyyMmDd(cellText) {
  return /^\d{4}-\d{2}-\d{2}$/.test(cellText) ? cellText : null;
}

export async function checkIndex({page, base, outDir}) {
  const resp = await page.goto(`${base}/`);
  await waitReady(page);
  const headers = resp.headers();
  const all = await listed(page);
  const out = {all, headers: {csp: headers['content-security-policy'], nosniff: headers['x-content-type-options'],
    referrer: headers['referrer-policy']}, searches: {}};
  await page.waitForFunction(() => [...document.images].every((img) => img.complete));
  out.brokenImages = await page.$$eval('img', (imgs) => imgs.filter((i) => !i.naturalWidth).map((i) => i.src));
  await page.screenshot({path: join(outDir, 'index.png'), fullPage: true});
  // search for the biggest study (most images): others may be deliberately odd
  const images = (s) => parseInt(s.cells[7].split('/')[1], 10) || 0;
  const first = [...all.studies].sort((a, b) => images(b) - images(a))[0];
  if (!first) return out;
  out.subject = first.uid;
  const patientId = first.cells[2];
  const date = yyyyMmDd(first.cells[3]);
  const s = out.searches;
  s.byPatientId = {query: patientId, ...(await search(page, {'q-patient': patientId}))};
  // part of the family name, in another case: the list matches names too
  const namePart = first.patient.split(/[ ,]/)[0].slice(0, 4).toLowerCase();
  s.byPatientName = {query: namePart, ...(await search(page, {'q-patient': namePart}))};
  s.noMatch = await search(page, {'q-patient': 'no-such-patient-zz'});
  s.modalityMR = await search(page, {'q-modality': 'MR'});
  s.modalitySM = await search(page, {'q-modality': 'SM'});
  if (date) {
    s.dateIncludes = {date, ...(await search(page, {'q-from': date, 'q-to': date}))};
    s.dateExcludes = await search(page, {'q-from': '1990-01-01', 'q-to': '1990-12-31'});
  }
  // a slide's patient (from the card's case line) finds its slide, and its study if any
  const withCase = all.slides.find((x) => x.caseLine);
  if (withCase) {
    const query = withCase.caseLine.split(' · ').pop();
    s.bySlidePatient = {query, ...(await search(page, {'q-patient': query}))};
  }
  // the search is in the address: reloading it gives the same list
  await page.goto(s.byPatientId.url);
  await waitReady(page);
  s.reloaded = (await listed(page)).studies.map((x) => x.uid);
  await page.goto(`${base}/`);
  await waitReady(page);
  return out;
}
