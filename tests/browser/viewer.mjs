// Drives vna's viewer in a real headless Chromium and prints one JSON report.
//   node tests/browser/viewer.mjs <base-url> <out-dir>
// It only observes and acts like a user; tests/test_browser.py judges the report
// (and compares the slide screenshots with OpenSlide's reading of the source).
import {mkdirSync, writeFileSync} from 'node:fs';
import {join} from 'node:path';
import {chromium} from 'playwright-core';
import {checkIndex} from './index_checks.mjs';
import {checkSlide} from './slide_checks.mjs';
import {checkStudy} from './study_checks.mjs';

const [base, outDir] = process.argv.slice(2);
if (!base || !outDir) {
  console.error('usage: node viewer.mjs <base-url> <out-dir>');
  process.exit(2);
}
mkdirSync(outDir, {recursive: true});

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run'];

/** Every request the pages make, with how it ended. */
function recordNetwork(page, log) {
  page.on('console', (msg) => {
    if (msg.type() === 'error') log.consoleErrors.push({text: msg.text(), url: page.url(), location: msg.location()});
  });
  page.on('pageerror', (err) => log.pageErrors.push({message: String(err), url: page.url()}));
  page.on('response', (resp) => log.responses.push({url: resp.url(), status: resp.status(), page: page.url()}));
  page.on('requestfailed', (req) => {
    const failure = req.failure()?.errorText || 'failed';
    // navigating away aborts in-flight prefetches; that is not a server failure
    if (failure !== 'net::ERR_ABORTED') log.failedRequests.push({url: req.url(), failure});
    else log.abortedRequests.push(req.url());
  });
  page.on('request', (req) => log.requests.push(req.url()));
}

async function section(report, name, fn) {
  const started = Date.now();
  try {
    report[name] = await fn();
  } catch (err) {
    report[name] = {error: String(err && err.stack || err)};
  }
  report[name].seconds = (Date.now() - started) / 1000;
}

async function main() {
  const browser = await chromium.launch({executablePath: CHROMIUM, args: ARGS});
  const report = {base, consoleErrors: [], pageErrors: [], requests: [], responses: [],
    failedRequests: [], abortedRequests: []};
  try {
    const context = await browser.newContext({viewport: {width: 1280, height: 800}, deviceScaleFactor: 1});
    const page = await context.newPage();
    page.setDefaultTimeout(60000);
    recordNetwork(page, report);
    const ctx = {page, base, outDir, report};
    await section(report, 'index', () => checkIndex(ctx));
    await section(report, 'slide', () => checkSlide(ctx));
    await section(report, 'study', () => checkStudy(ctx));
    await context.close();
  } finally {
    await browser.close();
  }
  writeFileSync(join(outDir, 'report.json'), JSON.stringify(report, null, 1));
  process.stdout.write(JSON.stringify(report) + '\n');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
