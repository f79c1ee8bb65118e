// `--experts SPEC`: which (layer, expert) pairs an expert node holds.
//   SPEC  := ITEM (',' ITEM)*
//   ITEM  := LAYERS ':' EXPERTS | '*'            ('*' alone = every pair)
//   RANGE := N | N '-' M | '*'                   (inclusive; '*' = all)
// Examples: `0-31:0-3` (experts 0..3 of every layer 0..31), `0:1,0:5,3:*`.
import { UserError } from './errors';

export interface ExpertPair {
  layer: number;
  expert: number;
}

/** The model sizes a SPEC is checked against (and that `*` expands to). */
export interface ModelDims {
  numLayers: number;
  numExperts: number;
}

export function pairKey(layer: number, expert: number): string {
  return `${layer}:${expert}`;
}

export function comparePairs(a: ExpertPair, b: ExpertPair): number {
  return a.layer - b.layer || a.expert - b.expert;
}

/** Sorted by (layer, expert), duplicates removed. */
export function uniquePairs(pairs: Iterable<ExpertPair>): ExpertPair[] {
  const seen = new Map<string, ExpertPair>();
  for (const p of pairs) seen.set(pairKey(p.layer, p.expert), { layer: p.layer, expert: p.expert });
  return [...seen.values()].sort(comparePairs);
}

export function allPairs(dims: ModelDims): ExpertPair[] {
  const out: ExpertPair[] = [];
  for (let layer = 0; layer < dims.numLayers; layer++) {
    for (let expert = 0; expert < dims.numExperts; expert++) out.push({ layer, expert });
  }
  return out;
}

/**
 * Parses a SPEC into sorted, unique pairs. With `dims`, every number is range
 * checked and `*` expands; without, `*` is an error. `what` names the source
 * in messages (a flag, a shard-map entry).
 */
export function parseExpertSpec(spec: string, dims?: ModelDims, what = '--experts'): ExpertPair[] {
  const text = spec.trim();
  const fail = (why: string): never => {
    throw new UserError(`${what} "${spec}": ${why} (expected e.g. "0-31:0-3" or "0:1,0:5,3:*")`);
  };
  if (!text) fail('empty');
  const pairs: ExpertPair[] = [];
  for (const rawItem of text.split(',')) {
    const item = rawItem.trim();
    if (!item) fail('an empty item between commas');
    if (item === '*') {
      if (!dims) fail('"*" needs the model\'s layer and expert counts');
      pairs.push(...allPairs(dims!));
      continue;
    }
    const parts = item.split(':');
    if (parts.length !== 2) fail(`"${item}" is not LAYERS:EXPERTS`);
    const layers = parseRange(parts[0].trim(), 'layer', dims?.numLayers, item, fail);
    const experts = parseRange(parts[1].trim(), 'expert', dims?.numExperts, item, fail);
    for (let l = layers[0]; l <= layers[1]; l++) {
      for (let e = experts[0]; e <= experts[1]; e++) pairs.push({ layer: l, expert: e });
    }
  }
  return uniquePairs(pairs);
}

function parseRange(s: string, kind: 'layer' | 'expert', count: number | undefined, item: string,
  fail: (why: string) => never): [number, number] {
  if (s === '*') {
    if (count === undefined) fail(`"*" in "${item}" needs the model's ${kind} count`);
    return [0, count! - 1];
  }
  const m = /^(\d+)(?:\s*-\s*(\d+))?$/.exec(s);
  if (!m) fail(`"${s}" in "${item}" is not ${kind === 'expert' ? 'an' : 'a'} ${kind} number, range N-M or *`);
  const lo = Number(m![1]);
  const hi = m![2] === undefined ? lo : Number(m![2]);
  if (hi < lo) fail(`${kind} range ${lo}-${hi} in "${item}" runs backwards`);
  if (count !== undefined && hi >= count) {
    fail(`${kind} ${hi} in "${item}" is out of range (the model has ${count} ${kind}s: 0-${count - 1})`);
  }
  return [lo, hi];
}

/**
 * The shortest SPEC this formatter knows for `pairs`: layers with the same
 * expert set are merged into a layer range ("0-31:0-3"; "0:1,0:5,3:0-7").
 */
export function formatExpertSpec(pairs: Iterable<ExpertPair>): string {
  const byLayer = new Map<number, number[]>();
  for (const p of uniquePairs(pairs)) {
    const list = byLayer.get(p.layer) ?? [];
    list.push(p.expert);
    byLayer.set(p.layer, list);
  }
  const layers = [...byLayer.keys()].sort((a, b) => a - b);
  const items: string[] = [];
  let i = 0;
  while (i < layers.length) {
    const key = ranges(byLayer.get(layers[i])!).join(',');
    let j = i;
    while (j + 1 < layers.length && layers[j + 1] === layers[j] + 1 && ranges(byLayer.get(layers[j + 1])!).join(',') === key) j++;
    const layerRange = j === i ? `${layers[i]}` : `${layers[i]}-${layers[j]}`;
    for (const r of key.split(',')) items.push(`${layerRange}:${r}`);
    i = j + 1;
  }
  return items.join(',');
}

/** Sorted unique numbers as "a-b" / "a" runs. */
function ranges(sorted: number[]): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < sorted.length) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j] + 1) j++;
    out.push(j === i ? `${sorted[i]}` : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return out;
}
