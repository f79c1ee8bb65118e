// Where a process's CPU time goes, from a .cpuprofile (bench/cpu-profile-preload.js, or node --cpu-prof):
// self time summed by category (ours by file, protobufjs, grpc-js/http2 framing, native, GC, idle) and by
// function, top N. Several files: one table each.
//   node dist/bench/profile-summary.js [--top 25] [--window FUNCTION] [--json] FILE.cpuprofile...
import fs from 'node:fs';
import path from 'node:path';

interface CallFrame { functionName: string; url: string; lineNumber: number }
interface ProfileNode { id: number; callFrame: CallFrame; children?: number[] }
interface CpuProfile { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[]; startTime: number; endTime: number }

/** Which part of the stack a frame belongs to: the categories the lean-call-path work cares about. */
export function category(f: CallFrame): string {
  const u = f.url;
  const name = f.functionName;
  if (name === '(idle)') return 'idle';
  if (name === '(garbage collector)') return 'gc';
  if (name === '(program)') return 'native (program)';
  if (name === '(root)') return 'root';
  // protobufjs generates each message's codec with new Function (no url): Type$encode, Route$fromObject, ...
  if (!u && /^\w+\$(encode|decode|verify|fromObject|toObject)$/.test(name)) return 'protobufjs';
  if (!u) return `native: ${name || '(anonymous)'}`;
  if (u.includes('/protobufjs/') || u.includes('/@protobufjs/')) return 'protobufjs';
  if (u.includes('/@grpc/grpc-js/')) return 'grpc-js';
  if (u.includes('/@grpc/proto-loader/')) return 'proto-loader';
  if (u.includes('/node_modules/')) return `npm: ${u.split('/node_modules/').pop()!.split('/').slice(0, u.includes('/node_modules/@') ? 2 : 1).join('/')}`;
  if (u.startsWith('node:')) {
    if (/node:(internal\/)?(http2|stream|net|internal\/streams|internal\/stream_base)/.test(u)) return 'node streams/net/http2';
    return `node: ${u.slice(5).split('/').slice(0, 2).join('/')}`;
  }
  // Ours: by file relative to the repository's dist/ or source root.
  const m = /\/(?:dist\/)?((?:core|coordinator|expert-node|bench|cli)\/.*)$/.exec(u.replace(/^file:\/\//, ''));
  return m ? `ours: ${m[1]}` : `other: ${u}`;
}

export interface Summary {
  file: string;
  totalMs: number;
  busyMs: number;
  byCategory: { name: string; ms: number }[];
  byFunction: { name: string; category: string; ms: number }[];
}

/**
 * `window`: only the samples between the first and the last one whose stack holds a function of that name
 * (e.g. callNode, accept): the timed part of a bench, without model loading and start-up.
 */
export function summarize(file: string, window?: string): Summary {
  const p = JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  let first = 0;
  let last = p.samples.length - 1;
  if (window) {
    const parent = new Map<number, number>();
    for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
    const under = new Map<number, boolean>();
    const isUnder = (id: number): boolean => {
      let v = under.get(id);
      if (v === undefined) {
        const up = parent.get(id);
        v = byId.get(id)!.callFrame.functionName === window || (up !== undefined && isUnder(up));
        under.set(id, v);
      }
      return v;
    };
    const hits = p.samples.map((id, i) => (isUnder(id) ? i : -1)).filter((i) => i >= 0);
    if (hits.length === 0) throw new Error(`${file}: no sample runs under a function named ${window}`);
    first = hits[0];
    last = hits[hits.length - 1];
  }
  const selfUs = new Map<number, number>();
  // timeDeltas[i] is the time before sample i; the time a sample stands for is the next delta.
  for (let i = first; i <= last; i++) {
    const dt = i + 1 < p.timeDeltas.length ? p.timeDeltas[i + 1] : 0;
    selfUs.set(p.samples[i], (selfUs.get(p.samples[i]) ?? 0) + Math.max(0, dt));
  }
  const cats = new Map<string, number>();
  const fns = new Map<string, { category: string; us: number }>();
  let total = 0;
  for (const [id, us] of selfUs) {
    const f = byId.get(id)!.callFrame;
    const c = category(f);
    total += us;
    cats.set(c, (cats.get(c) ?? 0) + us);
    const key = `${f.functionName || '(anonymous)'} ${f.url ? `${path.basename(f.url)}:${f.lineNumber + 1}` : ''}`.trim();
    const e = fns.get(key) ?? { category: c, us: 0 };
    e.us += us;
    fns.set(key, e);
  }
  const idle = cats.get('idle') ?? 0;
  const ms = (us: number) => Math.round(us / 10) / 100;
  return {
    file: path.basename(file),
    totalMs: ms(total),
    busyMs: ms(total - idle),
    byCategory: [...cats].sort((a, b) => b[1] - a[1]).map(([name, us]) => ({ name, ms: ms(us) })),
    byFunction: [...fns].sort((a, b) => b[1].us - a[1].us).map(([name, e]) => ({ name, category: e.category, ms: ms(e.us) })),
  };
}

function main(): void {
  const args = process.argv.slice(2);
  const topAt = args.indexOf('--top');
  const top = topAt >= 0 ? Number(args.splice(topAt, 2)[1]) : 25;
  const json = args.includes('--json');
  const windowAt = args.indexOf('--window');
  const window = windowAt >= 0 ? args.splice(windowAt, 2)[1] : undefined;
  const files = args.filter((a) => a !== '--json');
  if (files.length === 0) {
    process.stderr.write('usage: node dist/bench/profile-summary.js [--top N] [--window FUNCTION] [--json] FILE.cpuprofile...\n');
    process.exitCode = 2;
    return;
  }
  for (const f of files) {
    const s = summarize(f, window);
    if (json) {
      process.stdout.write(`${JSON.stringify({ ...s, byFunction: s.byFunction.slice(0, top) })}\n`);
      continue;
    }
    const pct = (ms: number) => `${((100 * ms) / Math.max(1e-9, s.busyMs)).toFixed(1)}%`;
    process.stdout.write(`\n== ${s.file}: ${s.totalMs} ms sampled, ${s.busyMs} ms busy (not idle)\n`);
    process.stdout.write('-- self time by category (% of busy)\n');
    for (const c of s.byCategory) if (c.name !== 'idle') process.stdout.write(`${c.ms.toFixed(1).padStart(10)} ms ${pct(c.ms).padStart(6)}  ${c.name}\n`);
    process.stdout.write(`-- top ${top} functions by self time\n`);
    for (const fn of s.byFunction.filter((x) => x.category !== 'idle').slice(0, top)) {
      process.stdout.write(`${fn.ms.toFixed(1).padStart(10)} ms ${pct(fn.ms).padStart(6)}  ${fn.name}  [${fn.category}]\n`);
    }
  }
}

if (require.main === module) main();
