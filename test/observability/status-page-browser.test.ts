/// <reference lib="dom" />
// The status page in headless chromium on a 32-layer x 8-expert model (the real model's shape,
// tiny widths) served by a 2-node loopback cluster: the heatmap stays readable (every cell
// there, its text inside it, no sideways scrolling), the colour scale spans at least its
// minimum (near-equal latencies are not the two ends of the ramp), KPI values wrap instead of
// being clipped, the experts column explains its notation, and a `rebalance` in status.json
// is drawn (moves in progress first, a phase per move) and hidden again when it goes.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ChatTemplate } from '../../core/chat-template';
import { makeDemoModel } from '../../core/demo-model';
import { Registry } from '../../core/metrics';
import { TextTokenizer } from '../../core/tokenizer';
import type { Engine } from '../../coordinator/engine';
import { createHttpServer, type HttpServer } from '../../coordinator/http/server';
import { loadEngine } from '../../coordinator/load-engine';
import { LocalCluster } from '../../coordinator/local-cluster';
import { RemoteExperts } from '../../coordinator/remote-experts';
import { Scheduler } from '../../coordinator/scheduler';
import { buildStatus, observeEngine, statusRoutes, type EngineObservability, type StatusJson } from '../../coordinator/telemetry';
import { sourceNodeCommand } from '../cluster/helpers';
import { chromiumMissing, launchChromium } from '../helpers/chromium';
import { describeUnless } from '../helpers/skip';

const LAYERS = 32;
const EXPERTS = 8;
const DEMO = { layers: LAYERS, hidden: 32, intermediate: 64, heads: 2, kvHeads: 1, experts: EXPERTS, topK: 2, vocab: 300, predictorRank: 8, shards: 1 };
const dims = { hiddenSize: 32, intermediateSize: 64, numLayers: LAYERS, numExperts: EXPERTS };

type Rebalance = NonNullable<StatusJson['rebalance']>;

describeUnless(chromiumMissing)('the status page in chromium, 32 layers x 8 experts', () => {
  let tmp: string;
  let cluster: LocalCluster | undefined;
  let engine: Engine | undefined;
  let scheduler: Scheduler | undefined;
  let http: HttpServer | undefined;
  let url: string;
  let obs: EngineObservability;
  /** Added to the real status.json while set (the rebalancer's documented shape). */
  let rebalance: Rebalance | undefined;

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-status-32x8-'));
    const modelDir = path.join(tmp, 'model');
    await makeDemoModel(modelDir, DEMO);
    cluster = await LocalCluster.start({ modelDir, dims, nodes: 2, nodeCommand: sourceNodeCommand(), device: 'cpu', threads: 1 });
    const shardMap = cluster.shardMap;
    engine = await loadEngine({
      modelDir, device: 'cpu', threads: 1, log: () => undefined, experts: { kind: 'file', path: 'cluster' },
      remoteExperts: () => RemoteExperts.connect({ shardMap, model: dims, callTimeoutMs: 10_000 }),
    });
    const registry = new Registry();
    obs = observeEngine(engine, { registry, detail: 'requests' });
    const tokenizer = TextTokenizer.fromModel(engine.folder);
    scheduler = new Scheduler(engine, tokenizer, { metrics: registry });
    http = createHttpServer({
      scheduler, tokenizer, modelName: 'model', metrics: registry, log: () => undefined,
      chatTemplate: ChatTemplate.fromModel(engine.folder.dir, engine.folder.tokenizerConfig),
      routes: [statusRoutes(() => ({ ...buildStatus(obs), ...(rebalance ? { rebalance } : {}) }))],
    });
    url = (await http.listen(0)).url;
    // The same long prompt twice: every expert of most layers is called, and the second
    // request reuses the first's prefix (the prefix-cache KPI has its long text).
    const prompt = 'the expert cluster says hello to every layer and every expert of the model, '.repeat(3);
    for (let i = 0; i < 2; i++) {
      const res = await fetch(`${url}/v1/completions`, {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'model', prompt, max_tokens: 4, temperature: 0 }),
      });
      expect(res.status).toBe(200);
    }
  }, 90_000);

  afterAll(async () => {
    await http?.close();
    await scheduler?.close();
    await engine?.close();
    await cluster?.stop();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  test('heatmap readable, colour scale at least its minimum span, KPIs wrap, notation explained, rebalance drawn', async () => {
    const status = buildStatus(obs);
    const called = status.experts.filter((e) => e.calls > 0).length;
    expect(called).toBeGreaterThan(LAYERS * EXPERTS / 2);
    expect(status.queue.prefix_cache_hit_tokens).toBeGreaterThan(0);

    const browser = await launchChromium();
    try {
      const page = browser.context.pages()[0] ?? (await browser.context.newPage());
      // A laptop-sized window: the page must fit it without sideways scrolling.
      await page.setViewportSize({ width: 1024, height: 768 });
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto(`${url}/?interval=250`);
      await page.waitForFunction((n) => document.querySelectorAll('#heatmap td.cell.filled').length >= n, called, { timeout: 15_000 });
      // Every layer a row of 8 cells; each cell's number fits inside it, in a legible size.
      const grid = await page.$$eval('#heatmap tbody tr', (rows) => rows.map((r) => r.querySelectorAll('td.cell').length));
      expect(grid).toEqual(new Array(LAYERS).fill(EXPERTS));
      // Queried and measured in one task: $$eval queries, then measures in a second round trip, and a
      // redraw between the two (every 250 ms here) leaves it measuring detached cells, 0 wide.
      const cells = await page.evaluate(() => Array.from(document.querySelectorAll('#heatmap td.cell.filled')).map((td) => {
        const r = td.getBoundingClientRect();
        return { w: r.width, h: r.height, overflow: td.scrollWidth > td.clientWidth, font: parseFloat(getComputedStyle(td).fontSize) };
      }));
      expect(cells.length).toBeGreaterThanOrEqual(called);
      for (const c of cells) {
        expect(c.overflow).toBe(false);
        expect(c.w).toBeGreaterThanOrEqual(24);
        expect(c.h).toBeGreaterThanOrEqual(16);
        expect(c.font).toBeGreaterThanOrEqual(10);
      }
      const labels = await page.$$eval('#heatmap tbody th', (ths) => ths.map((t) => t.textContent));
      expect(labels).toEqual(Array.from({ length: LAYERS }, (_, i) => `L${i}`));
      expect(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth)).toBe(true);

      // Latency: a log scale at least 4x wide, labelled; its ends bracket every cell's value.
      const legend = async () => ({
        lo: await page.textContent('#legend-lo'), hi: await page.textContent('#legend-hi'), note: await page.textContent('#legend-note'),
      });
      const lat = await legend();
      expect(lat.note).toBe('(log scale, at least 4× wide)');
      const lo = parseFloat(lat.lo!), hi = parseFloat(lat.hi!);
      expect(hi / lo).toBeGreaterThanOrEqual(4 * 0.99); // the labels are rounded to 3 decimals
      const p50s = status.experts.filter((e) => e.p50_ms !== null).map((e) => e.p50_ms!);
      expect(lo).toBeLessThanOrEqual(Math.min(...p50s) + 0.001);
      expect(hi).toBeGreaterThanOrEqual(Math.max(...p50s) - 0.001);
      // Active fractions: linear, at least 25 points wide, within 0..100%.
      await page.selectOption('#metric', 'active_fraction');
      const frac = await legend();
      expect(frac.note).toBe('(at least 25 points wide)');
      const flo = parseFloat(frac.lo!), fhi = parseFloat(frac.hi!);
      expect(fhi - flo).toBeGreaterThanOrEqual(25 - 0.11);
      expect(flo).toBeGreaterThanOrEqual(0);
      expect(fhi).toBeLessThanOrEqual(100);

      // KPI values wrap inside their cards: nothing sticks out or is cut off.
      await page.waitForFunction(() => / of prompt tokens/.test(document.getElementById('kpi-prefix')!.textContent ?? ''), undefined, { timeout: 10_000 });
      const kpis = await page.$$eval('.kpi', (cards) => cards.map((card) => {
        const v = card.querySelector('.value')!;
        const c = card.getBoundingClientRect(), r = v.getBoundingClientRect();
        return { id: v.id, text: v.textContent, inside: r.left >= c.left - 0.5 && r.right <= c.right + 0.5, overflow: v.scrollWidth > v.clientWidth + 1 };
      }));
      for (const k of kpis) expect(k).toEqual({ ...k, inside: true, overflow: false });

      // The experts column explains its notation.
      const tip = await page.getAttribute('#experts-head', 'title');
      expect(tip).toContain('0-3:0,0-3:2 = experts 0 and 2 of layers 0..3 (8 pairs)');
      expect(await page.$$eval('#nodes tbody tr', (rows) => rows.map((r) => r.children[2].getAttribute('title')))).toEqual([tip, tip]);

      // No rebalance field: no section.
      expect(await page.isHidden('#rebalance')).toBe(true);
      // One in progress: the state, a count per phase, moves in progress first.
      rebalance = {
        state: 'moving', started: new Date().toISOString(), moves: [
          { layer: 3, expert: 1, from: 'node0', to: 'node1', phase: 'done' },
          { layer: 7, expert: 2, from: 'node1', to: 'node0', phase: 'loading' },
          { layer: 1, expert: 5, from: null, to: 'node1', phase: 'switching' },
          { layer: 2, expert: 0, from: 'node0', to: null, phase: 'failed' },
        ],
      };
      await page.waitForFunction(() => !document.getElementById('rebalance')!.hidden, undefined, { timeout: 10_000 });
      expect(await page.textContent('#rebalance-state')).toBe('moving');
      expect(await page.textContent('#rebalance-summary')).toBe('4 moves: 1 loading, 1 switching, 1 done, 1 failed');
      const rows = await page.$$eval('#rebalance-moves tbody tr', (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)));
      expect(rows).toEqual([
        ['1', '5', 'new copy on node1', 'switching'],
        ['7', '2', 'node1 → node0', 'loading'],
        ['2', '0', 'copy removed from node0', 'failed'],
        ['3', '1', 'node0 → node1', 'done'],
      ]);
      // Failed: its error shows; then gone from status.json: the section hides.
      rebalance = { ...rebalance, state: 'failed', finished: new Date().toISOString(), error: 'node1: LoadExperts refused: memory budget' };
      await page.waitForFunction(() => document.getElementById('rebalance-state')!.textContent === 'failed', undefined, { timeout: 10_000 });
      expect(await page.textContent('#rebalance-error')).toBe('node1: LoadExperts refused: memory budget');
      rebalance = undefined;
      await page.waitForFunction(() => document.getElementById('rebalance')!.hidden, undefined, { timeout: 10_000 });
      expect(errors).toEqual([]);
    } finally {
      await browser.close();
    }
  }, 60_000);
});
