// A userspace link emulator for the benches: TCP proxies (node:net) that delay every chunk by a
// one-way delay and pace it at a bandwidth, in both directions, preserving order. All proxies of one
// LinkEmulator share the link: one pacer per direction, like a coordinator's one NIC to a switch.
//
// Model per direction: a chunk arriving at t starts on the wire when the link is free
// (max(t, freeAt)), occupies it for bytes * 8 / bandwidth, and is delivered whole one delay after its
// last byte left. Delivery times only grow, so order holds.
//
// Timers: Node's setTimeout has 1 ms granularity and fires late, so a due time closer than SPIN_MS is
// waited for by polling with setImmediate (the event loop keeps serving I/O between polls, but the
// process burns CPU while a chunk is pending); farther ones sleep with setTimeout until SPIN_MS before.
// That polling is most of the ~20% of one core the emulator takes during the 16-layer cluster bench on 1gbe
// (stats() reports it); sleeping on a worker thread's sub-ms futex wait instead was tried and not kept
// (bench/RESULTS.md, 2026-12-04: its wakes are ~110 us late, so 1gbe's short waits must poll anyway).
// Run it in its own process (LinkProcess) when the other side of the bench does blocking work on its
// event loop, or that work delays the releases. Every release records how late it was against its due
// time (stats()), so a bench prints the accuracy it got.
//
// Accuracy measured (test/bench/link-emulator.test.ts, 2 shared vCPUs, other builds running): releases
// are late by p50 ~1-2 us; p99 ~40 us when the machine has room, 0.6-1.2 ms (mean 30-55 us) while a
// 16-layer cluster bench loads both cores, 3-4 ms when other builds load them too. The proxy hop itself
// (two more loopback sockets and a JS event loop) adds ~30-45 us one way, so small-message one-way
// delays measure 138-147 us for 100 us, 1049-1063 us for 1 ms, 1536-1572 us for 1.5 ms. Bulk transfers
// reach 88-97% of the bandwidth (177-193 of 200 Mbit/s), never more. The benches' echo baselines go
// through the same proxies, so ratios to them carry the hop on both sides.
//   node dist/bench/link-emulator.js --serve   (a child of LinkProcess; talks over IPC)
import { fork, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { UserError } from '../core/errors';

// The presets and their parsing live in core/ so `turbosparse plan` models the same links the benches emulate.
import type { LinkSpec } from '../core/placement/link-presets';
export { LINK_PRESETS, describeLink, parseLink, type LinkSpec } from '../core/placement/link-presets';

/** How late releases were against their due times, microseconds. */
export interface LatenessStats {
  chunks: number;
  bytes: number;
  mean_us: number;
  p50_us: number;
  p99_us: number;
  max_us: number;
  /** CPU time (user + system) of the emulator's process since the stats were reset, and the wall time it
   * covers: the share of a core the emulator took from the processes it sits between (a real link takes
   * none). Meaningful when the emulator has its own process (LinkProcess); in process it counts the rest too. */
  cpu_ms: number;
  window_ms: number;
}

/** Due times closer than this are polled for with setImmediate rather than slept for. */
const SPIN_MS = 2.5;
/** A source is paused while this much is queued for its direction (bounds memory on a slow link). */
const HIGH_WATER_BYTES = 8 << 20;
/** Lateness samples kept (the first ones; enough for percentiles of a bench run). */
const MAX_SAMPLES = 200_000;

/** One direction of the link: when the wire is next free, milliseconds on performance.now()'s clock. */
interface Lane {
  freeAt: number;
}

/** One direction of one proxied connection: a queue of chunks with due times, released in order. */
class Pipe {
  private bufs: Buffer[] = [];
  private due: number[] = [];
  private head = 0;
  private queuedBytes = 0;
  private scheduled = false;
  private srcEnded = false;
  private srcPaused = false;
  private done = false;

  constructor(private readonly src: net.Socket, private readonly dst: net.Socket, private readonly lane: Lane,
    private readonly link: LinkEmulator) {
    src.on('data', (chunk: Buffer) => this.push(chunk));
    src.on('end', () => {
      this.srcEnded = true;
      this.pump();
    });
    dst.on('drain', () => this.pump());
  }

  private push(chunk: Buffer): void {
    const now = performance.now();
    const start = Math.max(now, this.lane.freeAt);
    const sent = start + (chunk.length * 8) / (this.link.spec.mbit * 1e3); // bits / (Mbit/s) in ms
    this.lane.freeAt = sent;
    this.bufs.push(chunk);
    this.due.push(sent + this.link.spec.delayUs / 1000);
    this.queuedBytes += chunk.length;
    if (this.queuedBytes > HIGH_WATER_BYTES && !this.srcPaused) {
      this.srcPaused = true;
      this.src.pause();
    }
    this.schedule(now);
  }

  private schedule(now: number): void {
    if (this.scheduled || this.done) return;
    if (this.head >= this.bufs.length) return;
    this.scheduled = true;
    const wait = this.due[this.head] - now;
    if (wait > SPIN_MS) setTimeout(this.run, Math.floor(wait - SPIN_MS + 1));
    else setImmediate(this.run);
  }

  private readonly run = (): void => {
    this.scheduled = false;
    this.pump();
  };

  private pump(): void {
    if (this.done || this.scheduled) return;
    const now = performance.now();
    while (this.head < this.bufs.length && this.due[this.head] <= now && !this.dst.writableNeedDrain) {
      const buf = this.bufs[this.head];
      this.link.record(now - this.due[this.head], buf.length);
      this.dst.write(buf);
      this.queuedBytes -= buf.length;
      this.head++;
    }
    if (this.head === this.bufs.length) {
      this.bufs = [];
      this.due = [];
      this.head = 0;
    } else if (this.head > 1024) {
      this.bufs = this.bufs.slice(this.head);
      this.due = this.due.slice(this.head);
      this.head = 0;
    }
    if (this.srcPaused && this.queuedBytes <= HIGH_WATER_BYTES / 2) {
      this.srcPaused = false;
      this.src.resume();
    }
    if (this.head < this.bufs.length) {
      if (!this.dst.writableNeedDrain) this.schedule(now); // else 'drain' pumps again
    } else if (this.srcEnded) {
      this.done = true;
      this.dst.end();
    }
  }
}

/** One emulated link: proxies to any number of targets, sharing one pacer per direction. */
export class LinkEmulator {
  private readonly servers: net.Server[] = [];
  private readonly sockets = new Set<net.Socket>();
  /** coordinator -> node (the proxy's client to its target) and back. */
  private readonly up: Lane = { freeAt: 0 };
  private readonly down: Lane = { freeAt: 0 };
  private samples: number[] = [];
  private chunks = 0;
  private bytes = 0;
  private lateSum = 0;
  private lateMax = 0;
  private cpuFrom = process.cpuUsage();
  private wallFrom = performance.now();

  constructor(readonly spec: LinkSpec) {
    if (!(spec.mbit > 0) || !(spec.delayUs >= 0)) throw new UserError(`link ${spec.name}: needs a delay >= 0 and a bandwidth > 0`);
  }

  /** Starts a proxy on 127.0.0.1 (a free port) to `target` ("host:port"); returns its "127.0.0.1:port". */
  async proxy(target: string): Promise<string> {
    const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(target);
    if (!m) throw new UserError(`link proxy target "${target}" is not host:port`);
    const [host, port] = [m[1], Number(m[2])];
    const server = net.createServer({ allowHalfOpen: true }, (client) => {
      const upstream = net.connect({ host, port, allowHalfOpen: true });
      for (const s of [client, upstream]) {
        s.setNoDelay(true);
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
      }
      // A reset or failure on one side ends the other (what a broken link does).
      client.on('error', () => upstream.destroy());
      upstream.on('error', () => client.destroy());
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
      new Pipe(client, upstream, this.up, this);
      new Pipe(upstream, client, this.down, this); // writes before upstream connects wait in its buffer
    });
    this.servers.push(server);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    return `127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  }

  /** @internal a release `lateMs` after its due time. */
  record(lateMs: number, bytes: number): void {
    const us = lateMs * 1000;
    this.chunks++;
    this.bytes += bytes;
    this.lateSum += us;
    if (us > this.lateMax) this.lateMax = us;
    if (this.samples.length < MAX_SAMPLES) this.samples.push(us);
  }

  stats(): LatenessStats {
    const s = [...this.samples].sort((a, b) => a - b);
    const q = (p: number) => (s.length ? s[Math.min(s.length - 1, Math.ceil(p * s.length) - 1)] : 0);
    const cpu = process.cpuUsage(this.cpuFrom);
    return { chunks: this.chunks, bytes: this.bytes, mean_us: this.chunks ? this.lateSum / this.chunks : 0, p50_us: q(0.5), p99_us: q(0.99), max_us: this.lateMax,
      cpu_ms: (cpu.user + cpu.system) / 1000, window_ms: performance.now() - this.wallFrom };
  }

  resetStats(): void {
    this.samples = [];
    this.chunks = 0;
    this.bytes = 0;
    this.lateSum = 0;
    this.lateMax = 0;
    this.cpuFrom = process.cpuUsage();
    this.wallFrom = performance.now();
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await Promise.all(this.servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
    this.servers.length = 0;
  }
}

// ---- the emulator in a child process, driven over IPC ----

type Request = { id: number; op: 'proxy'; target: string } | { id: number; op: 'stats' } | { id: number; op: 'reset' };
type Reply = { id: number; address?: string; stats?: LatenessStats; error?: string };

/** A LinkEmulator in its own process, so that the bench's compute does not delay its releases. */
export class LinkProcess {
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void }>();

  private constructor(readonly spec: LinkSpec, private readonly child: ChildProcess) {
    child.on('message', (r: Reply) => {
      const w = this.waiting.get(r.id);
      this.waiting.delete(r.id);
      if (r.error) w?.reject(new Error(r.error));
      else w?.resolve(r);
    });
    child.on('exit', (code, signal) => {
      for (const w of this.waiting.values()) w.reject(new Error(`link emulator process exited (${signal ?? code})`));
      this.waiting.clear();
    });
  }

  static async start(spec: LinkSpec): Promise<LinkProcess> {
    // From sources (node -r test/cluster/ts-register-cached.js) the child runs from sources too.
    const execArgv = __filename.endsWith('.ts') ? ['-r', path.resolve(__dirname, '..', 'test', 'cluster', 'ts-register-cached.js')] : [];
    const child = fork(__filename, ['--serve', JSON.stringify(spec)], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const p = new LinkProcess(spec, child);
    await p.call({ op: 'stats' }); // up and answering
    return p;
  }

  private call(req: { op: 'proxy'; target: string } | { op: 'stats' } | { op: 'reset' }): Promise<Reply> {
    const id = this.nextId++;
    return new Promise<Reply>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.child.send({ ...req, id });
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  async proxy(target: string): Promise<string> {
    return (await this.call({ op: 'proxy', target })).address!;
  }

  async stats(): Promise<LatenessStats> {
    return (await this.call({ op: 'stats' })).stats!;
  }

  async resetStats(): Promise<void> {
    await this.call({ op: 'reset' });
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.kill('SIGTERM');
    await exited;
  }
}

if (require.main === module && process.argv[2] === '--serve' && process.send) {
  const link = new LinkEmulator(JSON.parse(process.argv[3]) as LinkSpec);
  process.on('message', (req: Request) => {
    const reply = (r: Omit<Reply, 'id'>) => process.send!({ ...r, id: req.id });
    if (req.op === 'proxy') link.proxy(req.target).then((address) => reply({ address }), (e: Error) => reply({ error: e.message }));
    else if (req.op === 'stats') reply({ stats: link.stats() });
    else {
      link.resetStats();
      reply({});
    }
  });
  process.on('disconnect', () => process.exit(0)); // the bench is gone
  process.on('SIGTERM', () => void link.close().then(() => process.exit(0)));
}
