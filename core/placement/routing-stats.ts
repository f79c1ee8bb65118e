// routing.json: how often each (layer, expert) pair is routed to and how many of
// its neurons the predictors mark active, plus per-node call latency. Written by
// `GET /v1/stats/routing`, `turbosparse stats --export` and `turbosparse profile`;
// read by `shard-map --routing`, `rebalance` and `plan`.
//
//   { "format": "turbosparse-routing", "version": 1, "source": "serve" | "profile",
//     "created": "2026-12-03T15:00:00.000Z",
//     "model": { "name": "...", "layers": 16, "experts": 8, "top_k": 2, "hidden_size": 1024, "intermediate_size": 2048 },
//     "tokens": 12345,          // token rows that went through each layer's router
//     "pairs": [ { "layer": 0, "expert": 0, "routed_tokens": 3100, "active_fraction": 0.12, "calls": 400 }, ... ],
//     "nodes": [ { "node": "expert-0", "address": "10.0.0.5:50051", "calls": 900, "tokens": 4000,
//                  "p50_ms": 1.2, "p99_ms": 3.4, "mean_ms": 1.4 } ] }
// `calls` (optional: files written before it still parse) = layer calls that routed at least one
// token to the pair, so routed_tokens / calls = routes per call: the rows of one call share the
// expert's weights, so a call costs its masks' union of neurons, not the sum (placement.ts).
import fs from 'node:fs';
import { z } from 'zod';
import { UserError } from '../errors';
import type { ModelDims } from '../expert-spec';

export const ROUTING_FORMAT = 'turbosparse-routing';

export interface RoutingPairStats {
  layer: number;
  expert: number;
  /** (token, expert) routes to this pair. */
  routed_tokens: number;
  /** Neurons computed / intermediate size over its routes; null when never routed. */
  active_fraction: number | null;
  /** Layer calls (micro-batches) that routed >= 1 token here; absent in older files. */
  calls?: number;
}

export interface RoutingNodeStats {
  node: string;
  address: string;
  calls: number;
  tokens: number;
  p50_ms: number | null;
  p99_ms: number | null;
  mean_ms: number | null;
}

export interface RoutingModel {
  name: string;
  layers: number;
  experts: number;
  top_k: number;
  hidden_size: number;
  intermediate_size: number;
}

export interface RoutingStats {
  format: typeof ROUTING_FORMAT;
  version: 1;
  source: 'serve' | 'profile';
  created: string;
  model: RoutingModel;
  tokens: number;
  pairs: RoutingPairStats[];
  nodes: RoutingNodeStats[];
}

const count = z.number().int().nonnegative();
const msOrNull = z.number().nonnegative().nullable();
const fileSchema = z.strictObject({
  format: z.literal(ROUTING_FORMAT),
  version: z.literal(1),
  source: z.enum(['serve', 'profile']),
  created: z.string(),
  model: z.strictObject({
    name: z.string(),
    layers: z.number().int().positive(),
    experts: z.number().int().positive(),
    top_k: z.number().int().positive(),
    hidden_size: z.number().int().positive(),
    intermediate_size: z.number().int().positive(),
  }),
  tokens: count,
  pairs: z.array(z.strictObject({
    layer: count, expert: count, routed_tokens: count, active_fraction: z.number().min(0).max(1).nullable(),
    calls: count.optional(),
  })),
  nodes: z.array(z.strictObject({
    node: z.string(), address: z.string(), calls: count, tokens: count, p50_ms: msOrNull, p99_ms: msOrNull, mean_ms: msOrNull,
  })),
});

/** Reads and validates routing.json (with `model`, also that it describes that model). */
export function loadRoutingStats(file: string, model?: ModelDims): RoutingStats {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new UserError(`routing stats ${file}: cannot read it (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  return parseRoutingStats(text, file, model);
}

export function parseRoutingStats(text: string, source: string, model?: ModelDims): RoutingStats {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new UserError(`routing stats ${source}: not JSON (${(e as Error).message.split('\n')[0]}); ` +
      'write one with `turbosparse stats --export` or `turbosparse profile`');
  }
  const parsed = fileSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue.path.length ? issue.path.join('.') : '(top level)';
    throw new UserError(`routing stats ${source}: ${where}: ${issue.message} ` +
      '(write one with `turbosparse stats --export` or `turbosparse profile`)');
  }
  const stats = parsed.data as RoutingStats;
  const m = stats.model;
  for (const [i, p] of stats.pairs.entries()) {
    if (p.layer >= m.layers || p.expert >= m.experts) {
      throw new UserError(`routing stats ${source}: pairs.${i} names layer ${p.layer} expert ${p.expert}, outside its model (${m.layers} x ${m.experts})`);
    }
    if (p.calls !== undefined && (p.calls > p.routed_tokens || (p.calls === 0) !== (p.routed_tokens === 0))) {
      throw new UserError(`routing stats ${source}: pairs.${i}.calls ${p.calls} with routed_tokens ${p.routed_tokens}: ` +
        'a pair routed to has 1..routed_tokens calls (write the file again with `turbosparse stats --export` or `turbosparse profile`)');
    }
  }
  if (model && (model.numLayers !== m.layers || model.numExperts !== m.experts)) {
    throw new UserError(`routing stats ${source} describe a model of ${m.layers} layers x ${m.experts} experts, ` +
      `but this one has ${model.numLayers} x ${model.numExperts}: collect them on the same model`);
  }
  return stats;
}

/** The file's text (stable key order, one pair per line is not needed: plain pretty JSON). */
export function formatRoutingStats(stats: RoutingStats): string {
  return `${JSON.stringify(stats, null, 2)}\n`;
}

/**
 * share[layer][expert]: the pair's fraction of its layer's routes. A layer with
 * no routes recorded counts every expert the same (nothing known: no skew assumed).
 */
export function routedShares(stats: RoutingStats): number[][] {
  const { layers, experts } = stats.model;
  const routed = Array.from({ length: layers }, () => new Array<number>(experts).fill(0));
  for (const p of stats.pairs) routed[p.layer][p.expert] += p.routed_tokens;
  return routed.map((row) => {
    const sum = row.reduce((a, b) => a + b, 0);
    return sum > 0 ? row.map((r) => r / sum) : row.map(() => 1 / experts);
  });
}

/**
 * fraction[layer][expert]: active neurons / intermediate size. A pair never
 * routed takes its layer's routed-weighted mean, then the whole file's, then `fallback`.
 */
export function activeFractions(stats: RoutingStats, fallback = 0.15): number[][] {
  const { layers, experts } = stats.model;
  const out = Array.from({ length: layers }, () => new Array<number>(experts).fill(Number.NaN));
  let allW = 0;
  let allSum = 0;
  const layerMean = new Array<number>(layers).fill(Number.NaN);
  const sums = new Array<number>(layers).fill(0);
  const weights = new Array<number>(layers).fill(0);
  for (const p of stats.pairs) {
    if (p.active_fraction === null) continue;
    out[p.layer][p.expert] = p.active_fraction;
    const w = Math.max(1, p.routed_tokens);
    sums[p.layer] += w * p.active_fraction;
    weights[p.layer] += w;
    allSum += w * p.active_fraction;
    allW += w;
  }
  for (let l = 0; l < layers; l++) if (weights[l] > 0) layerMean[l] = sums[l] / weights[l];
  const global = allW > 0 ? allSum / allW : fallback;
  return out.map((row, l) => row.map((f) => (Number.isNaN(f) ? (Number.isNaN(layerMean[l]) ? global : layerMean[l]) : f)));
}

/**
 * routesPerCall[layer][expert]: routed_tokens / calls, the rows one call to the pair carries on
 * average; null where the file has no `calls` for the pair (older files) or it was never routed.
 */
export function routesPerCall(stats: RoutingStats): (number | null)[][] {
  const { layers, experts } = stats.model;
  const out: (number | null)[][] = Array.from({ length: layers }, () => new Array<number | null>(experts).fill(null));
  for (const p of stats.pairs) {
    if (p.calls !== undefined && p.calls > 0) out[p.layer][p.expert] = p.routed_tokens / p.calls;
  }
  return out;
}
