// dashboard_check.js — drives the web dashboard (deploy/dashboard/) in
// headless Chromium with playwright-core (test/it_dashboard.sh runs it with
// NODE_PATH=$BUILD/npm/node_modules, Debian's /usr/bin/chromium).
//
//   node test/dashboard_check.js --url URL --devices N --rounds R --out DIR
//        [--ready FILE] [--refused-url URL] [--timeout S]
//
// 1. Opens URL, waits until the page is connected, checks that the token
//    left the address bar, then writes FILE (the test starts the fleet
//    after that, so the page sees every round close).
// 2. Waits until the page shows round R closed, N devices online and N
//    rows, and R points in the chart; records every change of what it
//    shows on the way.
// 3. Saves DIR/dashboard.png and prints one JSON line: the page's own
//    snapshot (window.fedmqDashboard.snapshot()), what the DOM shows, and
//    the rounds seen on the way, for the shell to compare with the
//    aggregator's progress lines.
// 4. With --refused-url: a page with a token the broker refuses must say
//    so (and show no data).
// Any page error or console error fails the run. Exit 0 on success, 1 with
// the reason on stderr.
'use strict';

const fs = require('fs');
const path = require('path');
const { chromium } = require('playwright-core');

function args() {
  const a = { timeout: 60 };
  const v = process.argv.slice(2);
  for (let i = 0; i < v.length; i += 2) {
    const k = v[i].replace(/^--/, '');
    if (i + 1 >= v.length) throw new Error('missing value for ' + v[i]);
    a[k] = v[i + 1];
  }
  for (const k of ['url', 'devices', 'rounds', 'out']) {
    if (!a[k]) throw new Error('--' + k + ' is required');
  }
  a.devices = Number(a.devices);
  a.rounds = Number(a.rounds);
  a.timeout = Number(a.timeout);
  return a;
}

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

// What a person sees, read from the DOM (not from the page's state).
function readDom() {
  const t = (id) => document.getElementById(id).textContent.trim();
  const rows = Array.from(document.querySelectorAll('#devices tbody tr'));
  return {
    conn: t('conn'),
    connClass: document.getElementById('conn').className,
    round: t('round'),
    roundClosed: document.getElementById('round').dataset.closed,
    online: t('online'),
    participants: t('participants'),
    accuracy: t('acc'),
    rejected: t('rejected'),
    late: t('late'),
    rows: rows.length,
    rowIds: rows.map((r) => r.dataset.id),
    rowsOnline: rows.filter((r) => !r.classList.contains('offline')).length,
    firstRow: rows.length ? Array.from(rows[0].cells).map((c) => c.textContent.trim()) : [],
    accPoints: Number(document.getElementById('chart-acc').dataset.points),
    devPoints: Number(document.getElementById('chart-dev').dataset.points),
    accCanvas: !!document.querySelector('#chart-acc canvas'),
    href: location.href
  };
}

async function main() {
  const a = args();
  const t0 = Date.now();
  const deadline = t0 + a.timeout * 1000;
  const problems = [];
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    // a root container has no user namespaces for Chromium's sandbox
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage']
  });
  try {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
    const page = await ctx.newPage();
    page.on('pageerror', (e) => problems.push('page error: ' + e.message));
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push('console error: ' + m.text());
    });
    page.on('requestfailed', (r) => problems.push('request failed: ' + r.url().replace(/#.*/, '')));
    page.on('response', (r) => {
      if (r.status() >= 400) problems.push('HTTP ' + r.status() + ' for ' + r.url().replace(/#.*/, ''));
    });
    const external = [];
    page.on('request', (r) => {
      const u = new URL(r.url());
      if (u.hostname !== '127.0.0.1' && u.protocol !== 'data:' && u.protocol !== 'blob:') external.push(r.url());
    });

    await page.goto(a.url, { waitUntil: 'load' });
    const snap = () => page.evaluate(() => window.fedmqDashboard.snapshot());
    // connected
    for (;;) {
      const s = await snap();
      if (s.connected) break;
      if (s.error) throw new Error('the page could not connect: ' + s.error);
      if (Date.now() > deadline) throw new Error('the page did not connect: ' + JSON.stringify(await page.evaluate(readDom)));
      await sleep(100);
    }
    const tConnected = Date.now() - t0;
    if (/token=/.test(page.url())) throw new Error('the token is still in the address bar');
    if (a.ready) fs.writeFileSync(a.ready, 'ready\n');

    // follow the fleet
    const seen = [];        // [{ms, closed, online}] on every change
    let last = '';
    let s;
    let dom;
    for (;;) {
      s = await snap();
      dom = await page.evaluate(readDom);
      const key = s.lastClosed + '/' + dom.online + '/' + dom.accPoints;
      if (key !== last) {
        seen.push({ ms: Date.now() - t0, closed: s.lastClosed, shown: dom.roundClosed, online: dom.online, points: dom.accPoints });
        last = key;
      }
      if (problems.length) throw new Error(problems.join('; '));
      if (s.lastClosed >= a.rounds && Number(dom.online) === a.devices && dom.rows === a.devices &&
          dom.rowsOnline === a.devices && Number(dom.roundClosed) >= a.rounds &&
          dom.accPoints >= Math.min(3, a.rounds) && dom.devPoints === dom.accPoints) break;
      if (Date.now() > deadline) {
        throw new Error('the page did not reach round ' + a.rounds + ' with ' + a.devices +
          ' devices online: snapshot ' + JSON.stringify(s) + ', DOM ' + JSON.stringify(dom));
      }
      await sleep(100);
    }
    // the table and the last-seen column render once a second
    await sleep(1100);
    dom = await page.evaluate(readDom);
    const series = await page.evaluate(() => window.fedmqDashboard.series());
    fs.mkdirSync(a.out, { recursive: true });
    const shot = path.join(a.out, 'dashboard.png');
    await page.screenshot({ path: shot, fullPage: true });

    let refused = null;
    if (a['refused-url']) {
      const p2 = await ctx.newPage();
      const errs = [];
      p2.on('pageerror', (e) => errs.push(e.message));
      await p2.goto(a['refused-url'], { waitUntil: 'load' });
      const lim = Date.now() + 15000;
      for (;;) {
        const d = await p2.evaluate(readDom);
        if (/conn-bad/.test(d.connClass)) { refused = d; break; }
        if (Date.now() > lim) throw new Error('a refused token was not reported: ' + JSON.stringify(d));
        await sleep(100);
      }
      if (errs.length) throw new Error('refused page: ' + errs.join('; '));
      await p2.close();
    }
    if (problems.length) throw new Error(problems.join('; '));
    if (external.length) throw new Error('requests outside the broker: ' + external.join(', '));
    console.log(JSON.stringify({
      ms: Date.now() - t0, connectedMs: tConnected, snapshot: await snap(), dom, series, seen,
      screenshot: shot, refused
    }));
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  console.error('dashboard_check: ' + (e && e.stack ? e.stack : e));
  process.exit(1);
});
