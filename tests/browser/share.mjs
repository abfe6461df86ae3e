// Sharing a slide, on a vna that is not in dev mode.
//   node tests/browser/share.mjs <base-url> <out-dir> <user> <password> <slide-id> <other-slide-id>
//        <deid-slide-url> <deid-study-url> <pin-url> <pin>
// A pathologist signs in and opens a slide, then makes a share link for it from
// that page (the cookie session, with its CSRF token).  A fresh browser context,
// with no account, opens the link: it must see the shared slide, and nothing of
// the other one.  A de-identified link of the other slide (made by the test) must
// show it without label, macro, case or vendor properties; a de-identified link
// of a CT study must open the series viewer in the share's UIDs; a link with a
// PIN asks for it on a plain form first (a wrong one is refused).  Prints one JSON
// report; tests/test_browser.py judges it.
import {mkdirSync} from 'node:fs';
import {join} from 'node:path';
import {chromium} from 'playwright-core';

const [base, outDir, user, password, slideId, otherId, deidUrl, studyUrl, pinUrl, pin] = process.argv.slice(2);
mkdirSync(outDir, {recursive: true});
const ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run'];

const ready = (page) => page.waitForFunction(() => ['ready', 'error'].includes(document.body.dataset.state));

function watch(page, log) {
  page.setDefaultTimeout(90000);
  page.on('pageerror', (err) => log.pageErrors.push(String(err)));
  page.on('console', (msg) => msg.type() === 'error' && log.consoleErrors.push(msg.text()));
  page.on('response', (r) => log.responses.push({url: r.url(), status: r.status()}));
}

/** Sign in on the form and open the slide viewer; then make a share link there. */
async function signInAndShare(browser, report) {
  const context = await browser.newContext({viewport: {width: 1024, height: 700}});
  const page = await context.newPage();
  watch(page, report.user);
  await page.goto(`${base}/slides/${slideId}/view`);
  await page.waitForURL(/\/login\?next=/);
  await page.fill('input[name="username"]', user);
  await page.fill('input[name="password"]', password);
  await Promise.all([page.waitForURL(`${base}/slides/${slideId}/view`), page.click('button[type="submit"]')]);
  await ready(page);
  report.user.slide = await page.evaluate(() => ({state: document.body.dataset.state, shared: document.body.classList.contains('shared')}));
  // the page's Share control: one day, no PIN, no download
  await page.click('#share-open');
  await page.fill('#share-form input[name="days"]', '1');
  const [answer] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/api/shares'),
    page.click('#share-form button[type="submit"]'),
  ]);
  await page.waitForFunction(() => !document.getElementById('share-url').hidden || document.getElementById('share-result').textContent);
  report.user.share = {status: answer.status(), request: answer.request().postDataJSON(),
    body: {url: await page.inputValue('#share-url')}, result: await page.textContent('#share-result')};
  await page.screenshot({path: join(outDir, 'share-form.png')});
  await context.close();
}

/** What a page of the share session may fetch: its status for each URL. */
function probe(page, urls) {
  return page.evaluate(async (list) => Promise.all(list.map(async (u) => {
    const r = await fetch(u, {headers: {Accept: '*/*'}});
    return {url: u, status: r.status, type: r.headers.get('content-type')};
  })), urls);
}

async function openShare(browser, report, url) {
  const context = await browser.newContext({viewport: {width: 1024, height: 700}});
  const page = await context.newPage();
  watch(page, report.visitor);
  await page.goto(url);
  await page.waitForURL(`${base}/slides/${slideId}/view`);
  await ready(page);
  await page.waitForFunction(() => document.body.dataset.fullyLoaded === 'true' || document.body.dataset.state === 'error');
  report.visitor.page = await page.evaluate(() => ({
    path: location.pathname,
    state: document.body.dataset.state,
    fullyLoaded: document.body.dataset.fullyLoaded,
    shared: document.body.classList.contains('shared'),
    title: document.getElementById('title').textContent,
    download: Boolean(document.getElementById('share-download')),
    status: document.getElementById('status').textContent,
  }));
  await page.screenshot({path: join(outDir, 'shared-slide.png')});
  const tile = (id) => `/slides/${id}_files/8/0_0.jpeg`;
  report.visitor.own = await probe(page, [tile(slideId), `/slides/${slideId}.dzi`]);
  report.visitor.other = await probe(page, [tile(otherId), `/slides/${otherId}.dzi`,
    `/iiif/3/${otherId}/0,0,256,256/max/0/default.jpg`, `/slides/${otherId}`, `/slides/${otherId}/thumbnail`,
    '/api/shares', '/api/audit']);
  report.visitor.cookies = (await context.cookies()).map((c) => ({name: c.name, httpOnly: c.httpOnly, sameSite: c.sameSite}));
  await context.close();
}

/** The de-identified link: what the slide page shows of the case. */
async function openDeidentified(browser, report) {
  const context = await browser.newContext({viewport: {width: 1024, height: 700}});
  const page = await context.newPage();
  watch(page, report.deid);
  await page.goto(deidUrl);
  await page.waitForURL(`${base}/slides/${otherId}/view`);
  await ready(page);
  await page.waitForFunction(() => document.body.dataset.fullyLoaded === 'true' || document.body.dataset.state === 'error');
  report.deid.page = await page.evaluate(() => ({
    state: document.body.dataset.state,
    fullyLoaded: document.body.dataset.fullyLoaded,
    title: document.getElementById('title').textContent,
    images: [...document.querySelectorAll('#associated img')].map((img) => img.dataset.kind),
    caseText: document.getElementById('case').textContent,
    properties: document.querySelectorAll('#props tbody tr').length,
    text: document.body.innerText,
  }));
  report.deid.hidden = await probe(page, [`/slides/${otherId}/label`, `/slides/${otherId}/macro`,
    `/iiif/3/${otherId}/manifest.json`, `/slides/${slideId}.dzi`]);
  await page.screenshot({path: join(outDir, 'deidentified-slide.png')});
  await context.close();
}

/** The de-identified study link: the series viewer, stepping through images. */
async function openStudy(browser, report) {
  const context = await browser.newContext({viewport: {width: 1024, height: 700}});
  const page = await context.newPage();
  watch(page, report.study);
  await page.goto(studyUrl);
  await page.waitForURL(/\/studies\/[0-9.]+\/view/);
  await ready(page);
  await page.waitForFunction(() => {
    const img = document.getElementById('frame');
    return document.body.dataset.state === 'error' || (img.complete && img.naturalWidth > 0);
  });
  await page.keyboard.press('ArrowDown');
  await page.waitForFunction(() => document.getElementById('frame').complete);
  report.study.page = await page.evaluate(() => ({
    path: location.pathname,
    state: document.body.dataset.state,
    info: document.getElementById('study-info').textContent,
    src: document.getElementById('frame').getAttribute('src'),
    width: document.getElementById('frame').naturalWidth,
    series: document.querySelectorAll('#series button, #series a').length,
    text: document.body.innerText,
    status: document.getElementById('status').textContent,
  }));
  await page.screenshot({path: join(outDir, 'deidentified-study.png')});
  await context.close();
}

/** The PIN form: a wrong PIN, then the right one, then the slide. */
async function openWithPin(browser, report) {
  const context = await browser.newContext({viewport: {width: 390, height: 844}, isMobile: true, hasTouch: true});
  const page = await context.newPage();
  watch(page, report.pin);
  await page.goto(pinUrl);
  report.pin.form = await page.locator('input[name="pin"]').count();
  await page.fill('input[name="pin"]', '0000');
  const [wrong] = await Promise.all([page.waitForResponse((r) => r.request().method() === 'POST'),
    page.click('button[type="submit"]')]);
  report.pin.wrong = wrong.status();
  await page.fill('input[name="pin"]', pin);
  await Promise.all([page.waitForURL(`${base}/slides/${slideId}/view`), page.click('button[type="submit"]')]);
  await ready(page);
  report.pin.page = await page.evaluate(() => ({state: document.body.dataset.state, shared: document.body.classList.contains('shared')}));
  await page.screenshot({path: join(outDir, 'pin-phone.png')});
  await context.close();
}

async function main() {
  const browser = await chromium.launch({executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ARGS});
  const report = {user: {pageErrors: [], consoleErrors: [], responses: []},
    visitor: {pageErrors: [], consoleErrors: [], responses: []},
    deid: {pageErrors: [], consoleErrors: [], responses: []},
    study: {pageErrors: [], consoleErrors: [], responses: []},
    pin: {pageErrors: [], consoleErrors: [], responses: []}};
  try {
    await signInAndShare(browser, report);
    if (report.user.share.status === 201) await openShare(browser, report, report.user.share.body.url);
    await openDeidentified(browser, report);
    await openStudy(browser, report);
    await openWithPin(browser, report);
  } finally {
    await browser.close();
  }
  return report;
}

main().then((report) => process.stdout.write(JSON.stringify(report) + '\n')).catch((err) => {
  console.error(err);
  process.exit(1);
});
