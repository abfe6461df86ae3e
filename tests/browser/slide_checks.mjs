// The slide viewer: open a slide from the list, zoom and pan with keys and the
// wheel, restore a view from its URL and photograph a known region, measure with
// the ruler, go full screen.
import {join} from 'node:path';
import {waitReady} from './index_checks.mjs';

/** Wait until OSD has drawn every tile the current view needs and is not animating. */
async function settled(page) {
  await page.waitForFunction(() => {
    const v = window.vna?.viewer;
    const item = v?.world.getItemAt(0);
    return item && item.getFullyLoaded()
      && Math.abs(v.viewport.getZoom(true) - v.viewport.getZoom(false)) < 1e-9
      && v.viewport.getCenter(true).distanceTo(v.viewport.getCenter(false)) < 1e-9;
  }, null, {polling: 100});
  // one more frame so the canvas shows what OSD has just drawn
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
}

async function viewState(page) {
  return page.evaluate(() => {
    const v = window.vna.viewer;
    const vp = v.viewport;
    const c = vp.viewportToImageCoordinates(vp.getCenter(true));
    return {
      hash: location.hash, center: [c.x, c.y],
      zoom: vp.viewportToImageZoom(vp.getZoom(true)),
      scalebar: document.querySelector('#scalebar .label').textContent,
      scalebarWidth: document.querySelector('#scalebar .bar').getBoundingClientRect().width,
      scalebarHidden: document.getElementById('scalebar').hidden,
      mag: document.getElementById('mag').textContent,
      zoomText: document.getElementById('zoom').textContent,
    };
  });
}

function tileCount(report) {
  return report.requests.filter((u) => /\/slides\/[^/]+_files\//.test(u)).length;
}

/** Photograph the middle of the viewer (away from the HUD, scale bar and navigator). */
async function regionShot(page, outDir, name) {
  const box = await page.locator('#osd').boundingBox();
  const clip = {x: Math.round(box.x + box.width * 0.25), y: Math.round(box.y + box.height * 0.25),
    width: Math.round(box.width * 0.5), height: Math.round(box.height * 0.5)};
  const path = join(outDir, `${name}.png`);
  await page.screenshot({path, clip});
  const image = await page.evaluate(({clip, box}) => {
    const vp = window.vna.viewer.viewport;
    const p = (x, y) => vp.viewerElementToImageCoordinates(new OpenSeadragon.Point(x - box.x, y - box.y));
    const a = p(clip.x, clip.y);
    const b = p(clip.x + clip.width, clip.y + clip.height);
    return {x0: a.x, y0: a.y, x1: b.x, y1: b.y};
  }, {clip, box});
  return {path, clip, image};
}

async function openFromList(page, base) {
  await page.goto(`${base}/`);
  await waitReady(page);
  const link = page.locator('#slides a.slide-name').first();
  if (await link.count() === 0) return false;
  await link.click();
  await page.waitForURL(/\/slides\/[^/]+\/view/);
  await page.waitForFunction(() => ['ready', 'error'].includes(document.body.dataset.state));
  return true;
}

async function sidePanel(page) {
  return page.evaluate(() => ({
    title: document.getElementById('title').textContent,
    case: Object.fromEntries([...document.querySelectorAll('#case dt')].map((dt) => [dt.textContent, dt.nextElementSibling.textContent])),
    caseLinks: [...document.querySelectorAll('#case a')].map((a) => a.getAttribute('href')),
    associated: [...document.querySelectorAll('#associated img')].map((img) => ({
      kind: img.dataset.kind, loaded: img.complete && img.naturalWidth > 0, width: img.naturalWidth})),
    properties: [...document.querySelectorAll('#props tr')].map((tr) => [tr.cells[0].textContent, tr.cells[1].textContent]),
    navigator: !!document.querySelector('.navigator'),
    slide: window.vna.slide,
  }));
}

async function keyboardAndWheel(page, report, out) {
  await page.focus('#osd');
  const before = tileCount(report);
  for (const key of ['+', '+', '+', 'ArrowRight', 'ArrowDown']) {
    await page.keyboard.press(key);
    await settled(page);
  }
  out.afterKeys = await viewState(page);
  const box = await page.locator('#osd').boundingBox();
  await page.mouse.move(box.x + box.width / 3, box.y + box.height / 3);
  await page.mouse.wheel(0, -300);
  await settled(page);
  out.afterWheel = await viewState(page);
  await page.keyboard.press('-');
  await settled(page);
  out.afterMinus = await viewState(page);
  out.tilesDuringNavigation = tileCount(report) - before;
}

async function ruler(page, out) {
  const box = await page.locator('#osd').boundingBox();
  await page.keyboard.press('r');
  const cx = box.x + box.width / 2;
  const cy = box.y + box.height / 2;
  const drag = {dx: 240, dy: 70};
  await page.mouse.move(cx - drag.dx / 2, cy - drag.dy / 2);
  await page.mouse.down();
  await page.mouse.move(cx, cy, {steps: 4});
  await page.mouse.move(cx + drag.dx / 2, cy + drag.dy / 2, {steps: 4});
  await page.mouse.up();
  out.ruler = {drag, ...(await page.evaluate(() => ({
    text: document.getElementById('ruler-readout').textContent,
    um: parseFloat(document.getElementById('ruler-readout').dataset.um),
    pressed: document.getElementById('ruler').getAttribute('aria-pressed'),
  }))), state: await viewState(page)};
  await page.screenshot({path: join(out.outDir, 'slide-ruler.png')});
  await page.keyboard.press('Escape');
}

async function fullscreen(page, out) {
  await page.keyboard.press('f');
  await page.waitForFunction(() => !!document.fullscreenElement, null, {timeout: 10000}).catch(() => {});
  out.fullscreen = await page.evaluate(() => document.fullscreenElement?.id || null);
  await page.keyboard.press('f');
  await page.waitForFunction(() => !document.fullscreenElement, null, {timeout: 10000}).catch(() => {});
  out.fullscreenExited = await page.evaluate(() => !document.fullscreenElement);
}

/** Open views from the URL alone (a bookmark), at 1:1 and at 1:2, and photograph them. */
async function bookmarkedRegions(page, base, outDir, slide, tag) {
  const path = `/slides/${encodeURIComponent(slide.id)}/view`;
  const regions = [];
  for (const [fx, fy, z] of [[0.25, 0.3, 1], [0.18, 0.45, 0.5]]) { // where the synthetic slide has tissue
    const want = {x: Math.round(slide.width * fx), y: Math.round(slide.height * fy), z};
    await page.goto('about:blank'); // a fresh load, not a same-document hash change
    await page.goto(`${base}${path}#x=${want.x}&y=${want.y}&z=${want.z}`);
    await page.waitForFunction(() => document.body.dataset.state === 'ready');
    await settled(page);
    const state = await viewState(page);
    regions.push({want, state, ...(await regionShot(page, outDir, `region-${tag}-z${z}`))});
  }
  return regions;
}

/** The side panel of every slide in the list, each opened in turn, and its views. */
async function everySlide(page, base, outDir) {
  await page.goto(`${base}/`);
  await waitReady(page);
  const hrefs = await page.$$eval('#slides a.slide-name', (links) => links.map((a) => a.getAttribute('href')));
  const panels = {};
  for (const href of hrefs) {
    await page.goto(`${base}${href}`);
    await page.waitForFunction(() => ['ready', 'error'].includes(document.body.dataset.state));
    await page.waitForFunction(() => [...document.querySelectorAll('#associated img')].every((i) => i.complete));
    const panel = await sidePanel(page);
    const n = Object.keys(panels).length + 1;
    await page.screenshot({path: join(outDir, `slide-panel-${n}.png`)});
    const regions = await bookmarkedRegions(page, base, outDir, panel.slide, `slide${n}`);
    panels[panel.slide.id] = {...panel, slide: undefined, href, regions};
  }
  return panels;
}

export async function checkSlide({page, base, outDir, report}) {
  if (!(await openFromList(page, base))) return {skipped: 'no ready slide listed'};
  const out = {url: page.url(), outDir};
  out.state = await page.evaluate(() => document.body.dataset.state);
  if (out.state !== 'ready') {
    out.status = await page.textContent('#status');
    return out;
  }
  await settled(page);
  out.home = await viewState(page);
  out.side = await sidePanel(page);
  await page.screenshot({path: join(outDir, 'slide-home.png')});
  await keyboardAndWheel(page, report, out);
  await page.screenshot({path: join(outDir, 'slide-zoomed.png')});
  out.regions = await bookmarkedRegions(page, base, outDir, out.side.slide, 'main');
  await page.screenshot({path: join(outDir, 'slide-bookmark.png')});
  await ruler(page, out);
  await fullscreen(page, out);
  delete out.outDir;
  out.panels = await everySlide(page, base, outDir);
  return out;
}
