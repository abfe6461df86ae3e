// Signing in through the browser, on a vna that is not in dev mode.
//   node tests/browser/login.mjs <base-url> <out-dir> <user> <password>
// Prints one JSON report: where an anonymous visitor lands, and what the pages
// show once signed in (the session cookie must carry every API and image request).
import {mkdirSync} from 'node:fs';
import {join} from 'node:path';
import {chromium} from 'playwright-core';

const [base, outDir, user, password] = process.argv.slice(2);
mkdirSync(outDir, {recursive: true});
const ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run'];

const ready = (page) => page.waitForFunction(() => ['ready', 'error'].includes(document.body.dataset.state));

async function main() {
  const browser = await chromium.launch({executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ARGS});
  const report = {pageErrors: [], consoleErrors: [], responses: []};
  try {
    const page = await browser.newPage({viewport: {width: 1280, height: 800}});
    page.setDefaultTimeout(60000);
    page.on('pageerror', (err) => report.pageErrors.push(String(err)));
    page.on('console', (msg) => msg.type() === 'error' && report.consoleErrors.push(msg.text()));
    page.on('response', (r) => report.responses.push({url: r.url(), status: r.status()}));

    // a bookmarked search: after signing in the visitor must be back on it
    await page.goto(`${base}/?modality=CT`);
    await page.waitForURL(/\/login\?next=/);
    await page.waitForLoadState('load');
    const landed = new URL(page.url());
    report.anonymousLandsOn = {path: landed.pathname, next: landed.searchParams.get('next')};
    await page.screenshot({path: join(outDir, 'login.png')});
    await page.fill('input[name="username"]', user);
    await page.fill('input[name="password"]', password);
    const [answer] = await Promise.all([
      page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/login'),
      page.click('button[type="submit"]'),
    ]);
    report.login = {status: answer.status(), location: answer.headers().location || null};
    if (answer.status() === 303) {
      await page.waitForURL(`${base}/?modality=CT`);
    } else {
      // the form failed (reported above); sign in through the JSON API, which sets
      // the same cookies, so the browsing checks below still run
      report.loginBody = await answer.text();
      const api = await page.context().request.post(`${base}/login`, {data: {username: user, password}});
      report.apiLogin = api.status();
      await page.goto(`${base}/?modality=CT`);
    }
    await ready(page);
    report.signedIn = await page.evaluate(() => ({
      state: document.body.dataset.state,
      status: document.getElementById('status').textContent,
      studies: [...document.querySelectorAll('#studies tbody tr[data-study]')].map((tr) => tr.dataset.study),
    }));
    const link = page.locator('#studies a.patient').first();
    if (await link.count()) {
      await link.click();
      await ready(page);
      await page.waitForFunction(() => {
        const img = document.getElementById('frame');
        return img.complete && img.naturalWidth > 0;
      });
      report.study = {state: await page.evaluate(() => document.body.dataset.state),
        src: await page.getAttribute('#frame', 'src')};
      await page.screenshot({path: join(outDir, 'signed-in-study.png')});
    }
  } finally {
    await browser.close();
  }
  return report;
}

main().then((report) => process.stdout.write(JSON.stringify(report) + '\n')).catch((err) => {
  console.error(err);
  process.exit(1);
});
