// The series viewer: open a study from the list, step through its images, change
// the window, switch series.
import {join} from 'node:path';
import {waitReady} from './index_checks.mjs';

/** The displayed image once it has loaded, with its mean grey level (same-origin canvas). */
async function shown(page) {
  await page.waitForFunction(() => {
    const img = document.getElementById('frame');
    return img.src && img.complete && img.naturalWidth > 0;
  });
  return page.evaluate(() => {
    const img = document.getElementById('frame');
    const canvas = document.createElement('canvas');
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    const g = canvas.getContext('2d');
    g.drawImage(img, 0, 0);
    const data = g.getImageData(0, 0, canvas.width, canvas.height).data;
    let sum = 0;
    for (let i = 0; i < data.length; i += 4) sum += data[i];
    return {src: img.src, index: Number(img.dataset.index), width: img.naturalWidth,
      mean: sum / (data.length / 4), position: document.getElementById('position').textContent,
      series: document.body.dataset.series, sliderValue: document.getElementById('slider').value,
      sliderMax: document.getElementById('slider').max};
  });
}

async function after(page, previousSrc, action) {
  await action();
  await page.waitForFunction((src) => document.getElementById('frame').src !== src, previousSrc);
  return shown(page);
}

/** The list row of the first study whose modalities include this one, or null. */
async function studyWithModality(page, modality) {
  const uid = await page.$$eval('#studies tbody tr[data-study]', (rows, m) => rows.find(
    (tr) => tr.cells[5].textContent.split(', ').includes(m))?.dataset.study || null, modality);
  return uid && page.locator(`#studies tr[data-study="${uid}"]`);
}

/** A study holding a whole-slide image leads to the slide viewer, from the list and from its page. */
async function wholeSlideStudy(page, base, outDir) {
  await page.goto(`${base}/`);
  await waitReady(page);
  const row = await studyWithModality(page, 'SM');
  if (!row) return null;
  const out = {uid: await row.getAttribute('data-study'),
    listLink: await row.locator('a.slide-link').getAttribute('href').catch(() => null)};
  await row.locator('a.patient').click();
  await page.waitForURL(/\/studies\/[^/]+\/view/);
  await waitReady(page);
  await page.waitForSelector('#wsi-link');
  out.pageLink = await page.getAttribute('#wsi-link', 'href');
  out.imageHidden = await page.evaluate(() => document.getElementById('frame').hidden);
  await page.screenshot({path: join(outDir, 'study-wsi.png')});
  await page.click('#wsi-link');
  await page.waitForURL(/\/slides\/[^/]+\/view/);
  await page.waitForFunction(() => ['ready', 'error'].includes(document.body.dataset.state));
  out.landed = {path: new URL(page.url()).pathname, state: await page.evaluate(() => document.body.dataset.state)};
  return out;
}

/** A multi-frame instance (an ultrasound cine loop) is stepped through frame by frame. */
async function cineStudy(page, base, outDir) {
  await page.goto(`${base}/`);
  await waitReady(page);
  const row = await studyWithModality(page, 'US');
  if (!row) return null;
  await row.locator('a.patient').click();
  await page.waitForURL(/\/studies\/[^/]+\/view/);
  await waitReady(page);
  const out = {first: await shown(page)};
  await page.keyboard.press('Home');
  out.home = await shown(page);
  out.next = await after(page, out.home.src, () => page.keyboard.press('ArrowDown'));
  await page.screenshot({path: join(outDir, 'study-cine.png')});
  return out;
}

export async function checkStudy({page, base, outDir}) {
  await page.goto(`${base}/`);
  await waitReady(page);
  // the biggest study (most images), as in the index checks
  const uid = await page.evaluate(() => {
    const images = (tr) => parseInt(tr.cells[7].textContent.split('/')[1], 10) || 0;
    const rows = [...document.querySelectorAll('#studies tbody tr[data-study]')].sort((a, b) => images(b) - images(a));
    return rows[0]?.dataset.study || null;
  });
  if (!uid) return {skipped: 'no study listed'};
  const link = page.locator(`#studies tr[data-study="${uid}"] a.patient`);
  await link.click();
  await page.waitForURL(/\/studies\/[^/]+\/view$/);
  await waitReady(page);
  const out = {url: page.url(), state: await page.evaluate(() => document.body.dataset.state)};
  out.title = await page.textContent('#title');
  out.info = await page.textContent('#study-info');
  out.seriesButtons = await page.locator('#series button').count();
  out.first = await shown(page);
  await page.screenshot({path: join(outDir, 'study.png')});
  await page.focus('#frame-box');
  out.arrowDown = await after(page, out.first.src, () => page.keyboard.press('ArrowDown'));
  out.arrowUp = await after(page, out.arrowDown.src, () => page.keyboard.press('ArrowUp'));
  const box = await page.locator('#frame-box').boundingBox();
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  out.wheel = await after(page, out.arrowUp.src, () => page.mouse.wheel(0, 120));
  out.slider = await after(page, out.wheel.src, () => page.locator('#slider').evaluate((s) => {
    s.value = '1';
    s.dispatchEvent(new Event('input', {bubbles: true}));
  }));
  out.end = await after(page, out.slider.src, () => page.keyboard.press('End'));
  out.presets = {};
  let src = out.end.src;
  for (const name of ['Lung', 'Bone', 'Brain', 'Soft tissue', 'Default']) {
    out.presets[name] = await after(page, src, () => page.click(`#presets button[data-preset="${name}"]`));
    src = out.presets[name].src;
  }
  await page.click('#presets button[data-preset="Lung"]');
  out.lungShot = await shown(page);
  await page.screenshot({path: join(outDir, 'study-lung.png')});
  // the address holds series, image and window: opening it again shows the same image
  out.lungUrl = page.url();
  await page.goto('about:blank');
  await page.goto(out.lungUrl);
  await waitReady(page);
  out.reopened = await shown(page);
  if (out.seriesButtons > 1) {
    out.secondSeries = await after(page, out.lungShot.src, () => page.click('#series button >> nth=1'));
    await page.screenshot({path: join(outDir, 'study-series2.png')});
  }
  out.wholeSlide = await wholeSlideStudy(page, base, outDir);
  out.cine = await cineStudy(page, base, outDir);
  return out;
}
