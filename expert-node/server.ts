// The ExpertNode service (gRPC, and the run socket for Run): handlers, validation of every request,
// one FIFO of work per node, health and reflection, graceful drain.
// `createServer(opts)` is apart from main.ts so tests bind port 0 in process.
// The health service is also offered alone on a plaintext port (listenHealth):
// kubelet gRPC probes present no client certificate to the mTLS port.
//
// A request's path: stream 'data' (raw bytes) -> scan the top-level fields
// (core/wire/request-scan.ts: id, counts) -> decode + validate straight from the
// bytes into the RoutedBatch (core/wire/expert-request-bytes.ts; bad request: an
// error *response* for that id; the stream keeps serving) -> queue -> one
// native moe call -> the response written straight into its bytes, with queue
// and compute microseconds. Bytes that name no id end the stream with INVALID_ARGUMENT.
import * as grpc from '@grpc/grpc-js';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation } from 'grpc-health-check';
import { UserError } from '../core/errors';
import { uniquePairs } from '../core/expert-spec';
import { maskBytes } from '../core/native';
import {
  EXPERT_MAX_MESSAGE_BYTES, EXPERT_SERVICE_NAME, expertProto, type ExpertResponse, type InfoResponse,
} from '../core/wire/expert-proto';
import { WireRejection } from '../core/wire/expert-messages';
import { type ReadRequest, readExpertRequest } from '../core/wire/expert-request-bytes';
import { writeExpertResponse, writeExpertResult } from '../core/wire/expert-response-bytes';
import { type RequestScan, scanRequest } from '../core/wire/request-scan';
import { rowWireBytes, type WireEncoding } from '../core/wire/rows';
import type { ExpertPair } from '../core/expert-spec';
import type { ExpertStore } from './expert-store';
import { readExpertsChange } from './experts-change';
import { type RunPeer, type RunStreamEvents, serveRunSocket } from './run-socket-peer';
import { listenService, type ServerTlsFiles, type ServiceListener } from './service-listener';

/** gRPC server options of an expert node; see the comment on each key. */
export const EXPERT_SERVER_OPTIONS: grpc.ServerOptions = {
  // A prefill chunk at Mixtral width is 512 rows x 4096 x 4 B = 8 MiB of hidden
  // state plus up to 2 x 512 masks of 1.8 KiB: allow large batches explicitly
  // (the default 4 MiB receive limit would reject them).
  'grpc.max_receive_message_length': EXPERT_MAX_MESSAGE_BYTES,
  'grpc.max_send_message_length': EXPERT_MAX_MESSAGE_BYTES,
  // Ping an idle coordinator connection every 30 s and drop it if no ack within
  // 10 s, so a vanished coordinator's stream and queue entries are freed.
  'grpc.keepalive_time_ms': 30_000,
  'grpc.keepalive_timeout_ms': 10_000,
  // Coordinators keep one stream open for hours: no connection age or idle limit.
  'grpc.max_connection_idle_ms': 2 ** 31 - 1,
};

/** A request as a hook sees it (tracing wraps this; see issue 7). */
export interface NodeRequestInfo {
  id: number;
  stepId: number;
  layer: number;
  tokens: number;
  routes: number;
  experts: number[];
  wire: WireEncoding;
  /** W3C trace context sent with the request. */
  traceContext: Record<string, string>;
  /** Routes per expert id (telemetry: routed tokens per (layer, expert)). */
  routesByExpert?: Record<number, number>;
  /** Payload bytes received: hidden rows, scales and masks. */
  bytesIn?: number;
}

export interface NodeRequestResult {
  ok: boolean;
  /** gRPC status code when not ok. */
  code?: number;
  message?: string;
  queueUs: number;
  computeUs: number;
  activeNeurons: number;
  /** Payload bytes of the output rows sent back (when ok). */
  bytesOut?: number;
}

export interface ExpertNodeHooks {
  /** Called when a valid request is accepted; the returned `end` runs when it has been answered. */
  onRequest?(info: NodeRequestInfo): { end?(result: NodeRequestResult): void } | void;
}

export interface ExpertNodeServerOptions {
  /** Model id reported by Info (e.g. the folder name). */
  modelId?: string;
  /** Kernel library version reported by Info. */
  version?: string;
  /** TLS on the service port (mTLS with `ca`; see service-listener.ts); plaintext when absent. */
  tls?: ServerTlsFiles;
  /** Merged over EXPERT_SERVER_OPTIONS. */
  grpcOptions?: grpc.ServerOptions;
  hooks?: ExpertNodeHooks;
  log?: (line: string) => void;
  /**
   * Request bytes that may wait in the queue (default 1 GiB); past it a request is answered
   * RESOURCE_EXHAUSTED instead of queued, so a client sending faster than the node computes
   * cannot exhaust its memory. A request arriving at an empty queue is always taken.
   */
  maxQueuedBytes?: number;
  /** Info's node_name (--name). */
  nodeName?: string;
  /** Expert weight bytes this node may hold (--memory-gib); 0 or absent: no limit. LoadExperts past it is RESOURCE_EXHAUSTED. */
  memoryBudgetBytes?: number;
}

/** A request failed validation: answered with this status, nothing else happens. */

/** Trace context is a traceparent and a tracestate; a few more entries are tolerated. */
const MAX_TRACE_ENTRIES = 64;

/** A Run stream: a gRPC one or a run socket (run-socket-peer.ts). */
interface OpenStream {
  peer: RunPeer;
  open: boolean;
  ended: boolean;
  pending: number;
  /**
   * Ids of queued requests, each with the error answers of later requests that
   * reused it: those are written after the original's answer, so a client that
   * matches answers by id still gets the original's first.
   */
  ids: Map<number, ExpertResponse[]>;
}

interface Job {
  stream: OpenStream;
  id: number;
  arrival: bigint;
  timeoutMs: number;
  /** The request as a RoutedBatch, validated against what this node holds. */
  decoded: ReadRequest;
  /** Its size on the wire, counted against maxQueuedBytes while it waits. */
  wireBytes: number;
  scope?: { end?(result: NodeRequestResult): void } | void;
  /** Accept order (1, 2, ...): jobs run in it, so an unload waits for the seq of the last job accepted before it. */
  seq: number;
}

const DEFAULT_MAX_QUEUED_BYTES = 2 ** 30;

const usSince = (t: bigint): number => Number((process.hrtime.bigint() - t) / 1000n);

export class ExpertNodeServer {
  readonly server: grpc.Server;
  readonly health: HealthImplementation;
  /** The plaintext health-only server, once listenHealth() bound it. */
  private healthServer: grpc.Server | null = null;
  private listener: ServiceListener | null = null;
  private store: ExpertStore | null = null;
  private draining = false;
  private readonly streams = new Set<OpenStream>();
  private readonly queue: Job[] = [];
  private queuedBytes = 0;
  private running = false;
  private idleWaiters: (() => void)[] = [];
  private readonly log: (line: string) => void;
  /** Measured at start (self-benchmark.ts); 0 when skipped. */
  private ffnBytesPerS = 0;
  /** LoadExperts / UnloadExperts run one at a time, in arrival order. */
  private adminChain: Promise<void> = Promise.resolve();
  private acceptedJobs = 0;
  private finishedJobs = 0;
  private jobWaiters: { seq: number; resolve: () => void }[] = [];

  constructor(private readonly opts: ExpertNodeServerOptions = {}) {
    this.log = opts.log ?? (() => undefined);
    this.server = new grpc.Server({ ...EXPERT_SERVER_OPTIONS, ...opts.grpcOptions });
    const { packageDefinition, service } = expertProto();
    // Run takes and gives raw bytes: accept() scans them and reads them into a RoutedBatch (request-scan.ts,
    // expert-request-bytes.ts); responses are written as bytes (expert-response-bytes.ts).
    // The admin calls take raw bytes too: experts-change.ts bounds their size before decoding.
    const raw = (b: Buffer) => b;
    const definition = { ...service, Run: { ...service.Run, requestDeserialize: raw, responseSerialize: raw },
      LoadExperts: { ...service.LoadExperts, requestDeserialize: raw }, UnloadExperts: { ...service.UnloadExperts, requestDeserialize: raw } };
    const handlers: grpc.UntypedServiceImplementation = {
      Run: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => this.handleRun(call),
      Info: (call: grpc.ServerUnaryCall<unknown, InfoResponse>, callback: grpc.sendUnaryData<InfoResponse>) => this.handleInfo(call, callback),
      LoadExperts: (call: grpc.ServerUnaryCall<Buffer, InfoResponse>, callback: grpc.sendUnaryData<InfoResponse>) =>
        this.handleChange('load', call, callback),
      UnloadExperts: (call: grpc.ServerUnaryCall<Buffer, InfoResponse>, callback: grpc.sendUnaryData<InfoResponse>) =>
        this.handleChange('unload', call, callback),
    };
    this.server.addService(definition as unknown as grpc.ServiceDefinition, handlers);
    this.health = new HealthImplementation({ '': 'NOT_SERVING', [EXPERT_SERVICE_NAME]: 'NOT_SERVING' });
    this.health.addToServer(this.server);
    new ReflectionService(packageDefinition).addToServer(this.server);
  }

  /** Binds host:port (port 0 = any free port) and returns the port. */
  async listen(host: string, port: number): Promise<number> {
    this.listener = await listenService(this.server, host, port, this.opts.tls,
      (socket) => serveRunSocket(socket, (peer) => this.openStream(peer)), this.log);
    return this.listener.port;
  }

  /**
   * Binds a second, plaintext server with only the gRPC health service (same
   * statuses as the main port) on host:port; returns the port. Nothing but
   * Check/Watch/List is reachable there.
   */
  listenHealth(host: string, port: number): Promise<number> {
    const addr = grpcAddress(host, port);
    const server = new grpc.Server({ 'grpc.max_receive_message_length': 64 * 1024 });
    this.health.addToServer(server);
    return new Promise((resolve, reject) => {
      server.bindAsync(addr, grpc.ServerCredentials.createInsecure(), (err, bound) => {
        if (err) {
          server.forceShutdown();
          reject(new UserError(`--health-port ${port}: cannot listen on ${addr}: ${err.message}`));
        } else {
          this.healthServer = server;
          resolve(bound);
        }
      });
    });
  }

  /** Weights are loaded: start serving (health SERVING). `ffnBytesPerS`: the start's self-benchmark (Info). */
  setStore(store: ExpertStore, measured: { ffnBytesPerS?: number } = {}): void {
    this.store = store;
    this.ffnBytesPerS = measured.ffnBytesPerS ?? 0;
    if (!this.draining) this.setHealth('SERVING');
  }

  get serving(): boolean {
    return this.store !== null && !this.draining;
  }

  /**
   * Graceful stop: NOT_SERVING, new requests answered UNAVAILABLE (the
   * coordinator retries them on a replica), queued work finished, streams
   * ended, then tryShutdown; forceShutdown when `graceMs` runs out.
   */
  async shutdown(graceMs = 10_000): Promise<void> {
    const deadline = Date.now() + graceMs;
    this.draining = true;
    this.setHealth('NOT_SERVING');
    await Promise.race([this.idle(), sleep(graceMs)]);
    for (const s of this.streams) {
      if (s.open) s.peer.end();
      s.open = false;
    }
    this.streams.clear();
    this.listener?.close();
    await new Promise<void>((resolve) => {
      const force = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, Math.max(0, deadline - Date.now()));
      force.unref();
      this.server.tryShutdown(() => {
        clearTimeout(force);
        resolve();
      });
    });
    // Probes see NOT_SERVING until the very end of the drain.
    this.healthServer?.forceShutdown();
    this.healthServer = null;
  }

  /** Stops at once (tests, fatal errors). */
  forceShutdown(): void {
    this.draining = true;
    this.listener?.destroy();
    this.server.forceShutdown();
    this.healthServer?.forceShutdown();
    this.healthServer = null;
  }

  private setHealth(status: 'SERVING' | 'NOT_SERVING'): void {
    this.health.setStatus('', status);
    this.health.setStatus(EXPERT_SERVICE_NAME, status);
  }

  private idle(): Promise<void> {
    if (!this.running && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  // ---- Info ----

  private handleInfo(call: grpc.ServerUnaryCall<unknown, InfoResponse>, callback: grpc.sendUnaryData<InfoResponse>): void {
    const store = this.store;
    if (!store) {
      callback({ code: grpc.status.UNAVAILABLE, details: 'weights are still loading (health is NOT_SERVING until they are)' });
      return;
    }
    if (call.cancelled) return;
    callback(null, this.infoOf(store));
  }

  private infoOf(store: ExpertStore): InfoResponse {
    return {
      modelId: this.opts.modelId ?? '',
      hiddenSize: store.dims.hiddenSize,
      intermediateSize: store.dims.intermediateSize,
      numLayers: store.dims.numLayers,
      numExperts: store.dims.numExperts,
      experts: store.pairs.map((p) => ({ layer: p.layer, expert: p.expert })),
      expertsSpec: store.spec,
      dtype: store.dtype,
      device: store.backend.device,
      kernels: store.backend.description,
      weightBytes: store.weightBytes,
      version: this.opts.version ?? '',
      memoryBudgetBytes: this.opts.memoryBudgetBytes ?? 0,
      ffnBytesPerS: this.ffnBytesPerS,
      nodeName: this.opts.nodeName ?? '',
    };
  }

  // ---- LoadExperts / UnloadExperts (admin; same server, so the same TLS/mTLS as Run) ----

  private handleChange(kind: 'load' | 'unload', call: grpc.ServerUnaryCall<Buffer, InfoResponse>,
    callback: grpc.sendUnaryData<InfoResponse>): void {
    const store = this.store;
    const fail = (code: grpc.status, details: string) => callback({ code, details });
    if (!store) return fail(grpc.status.UNAVAILABLE, 'weights are still loading (health is NOT_SERVING until they are)');
    if (this.draining) return fail(grpc.status.UNAVAILABLE, 'expert node is shutting down');
    let pairs: ExpertPair[];
    try {
      pairs = readExpertsChange(call.request, store.dims);
    } catch (e) {
      const r = e instanceof WireRejection ? e : new WireRejection(grpc.status.INTERNAL, `bug: ${(e as Error).message}`);
      return fail(r.code, r.message);
    }
    const run = this.adminChain.then(() => (kind === 'load' ? this.loadPairs(store, pairs, call) : this.unloadPairs(store, pairs)));
    this.adminChain = run.catch(() => undefined);
    run.then(() => callback(null, this.infoOf(store)), (e: Error) => {
      const r = e instanceof WireRejection ? e
        : e instanceof UserError ? new WireRejection(grpc.status.FAILED_PRECONDITION, e.message)
          : new WireRejection(grpc.status.INTERNAL, `${kind} failed: ${e.message}`);
      if (r.code === grpc.status.INTERNAL) this.log(`${kind}: ${e.stack}`);
      fail(r.code, r.message);
    });
  }

  /** Uploads the pairs not held yet, all or nothing, within the memory budget; requests keep running meanwhile. */
  private async loadPairs(store: ExpertStore, pairs: ExpertPair[], call: grpc.ServerUnaryCall<Buffer, InfoResponse>): Promise<void> {
    if (this.draining) throw new WireRejection(grpc.status.UNAVAILABLE, 'expert node is shutting down');
    const unique = uniquePairs(pairs).filter((p) => !store.has(p.layer, p.expert));
    if (unique.length === 0) return;
    const budget = this.opts.memoryBudgetBytes ?? 0;
    const need = unique.reduce((s, p) => s + store.pairBytes(p), 0);
    if (budget > 0 && store.weightBytes + need > budget) {
      throw new WireRejection(grpc.status.RESOURCE_EXHAUSTED, `loading ${unique.length} experts needs ${mib(need)} more, but the node ` +
        `holds ${mib(store.weightBytes)} of its ${mib(budget)} budget (--memory-gib); nothing loaded: unload some first or raise --memory-gib`);
    }
    const t0 = Date.now();
    try {
      await store.add(unique, () => call.cancelled || this.draining);
    } catch (e) {
      if (call.cancelled) throw new WireRejection(grpc.status.CANCELLED, 'the caller went away; nothing loaded');
      if (this.draining) throw new WireRejection(grpc.status.UNAVAILABLE, 'expert node is shutting down; nothing loaded');
      throw e;
    }
    this.log(`loaded ${unique.length} experts in ${((Date.now() - t0) / 1000).toFixed(1)} s; holding ${store.pairs.length} (${store.spec})`);
  }

  /** Stops holding the pairs now, frees them once every request accepted before has been answered. */
  private async unloadPairs(store: ExpertStore, pairs: ExpertPair[]): Promise<void> {
    const gone = store.retire(pairs);
    if (gone.length === 0) return;
    await this.jobsFinished(this.acceptedJobs);
    store.free(gone);
    this.log(`unloaded ${gone.length} experts; holding ${store.pairs.length} (${store.spec || 'none'})`);
  }

  /** Resolves once job `seq` (and so every job accepted before it) has been answered. */
  private jobsFinished(seq: number): Promise<void> {
    if (this.finishedJobs >= seq) return Promise.resolve();
    return new Promise((resolve) => this.jobWaiters.push({ seq, resolve }));
  }

  // ---- Run ----

  private handleRun(call: grpc.ServerDuplexStream<Buffer, Buffer>): void {
    const events = this.openStream({
      write: (bytes) => call.write(bytes),
      end: () => call.end(),
      fail: (code, details) => call.emit('error', { code, details }),
    });
    call.on('data', events.data);
    call.on('end', events.ended);
    // The coordinator went away or cancelled: drop its queued work's replies.
    call.on('cancelled', events.closed);
    call.on('error', events.closed);
    call.on('close', events.closed);
  }

  /** A new Run stream (gRPC or run socket) answering through `peer`. */
  private openStream(peer: RunPeer): RunStreamEvents {
    const stream: OpenStream = { peer, open: true, ended: false, pending: 0, ids: new Map() };
    this.streams.add(stream);
    return {
      data: (bytes) => this.accept(stream, bytes),
      ended: () => {
        stream.ended = true;
        this.finishIfDone(stream);
      },
      closed: () => {
        stream.open = false;
        this.streams.delete(stream);
      },
    };
  }

  private accept(stream: OpenStream, bytes: Buffer): void {
    const arrival = process.hrtime.bigint();
    if (!stream.open) return;
    const scan = scanRequest(bytes);
    if (scan.idTooLarge || (scan.error && scan.id === undefined)) {
      // No id to answer under: the stream ends, naming the cause.
      this.failStream(stream, grpc.status.INVALID_ARGUMENT, scan.idTooLarge
        ? `a request's id is above ${Number.MAX_SAFE_INTEGER} (2^53 - 1), which this node cannot echo exactly`
        : `malformed request: ${scan.error}`);
      return;
    }
    const id = scan.id ?? 0;
    stream.pending++;
    const original = stream.ids.get(id);
    if (original) {
      // Answered after the original (see OpenStream.ids), which runs undisturbed.
      original.push({ id, error: { code: grpc.status.INVALID_ARGUMENT,
        message: `id ${id} is already used by a request still pending on this stream (ids must be unique among pending requests); not run` } });
      return;
    }
    let job: Job;
    try {
      if (this.draining) throw new WireRejection(grpc.status.UNAVAILABLE, 'expert node is shutting down');
      if (scan.error) throw new WireRejection(grpc.status.INVALID_ARGUMENT, `malformed request: ${scan.error}`);
      const maxQueued = this.opts.maxQueuedBytes ?? DEFAULT_MAX_QUEUED_BYTES;
      if (this.queue.length > 0 && this.queuedBytes + bytes.length > maxQueued) {
        throw new WireRejection(grpc.status.RESOURCE_EXHAUSTED, `the node's queue is full (${this.queue.length} requests, ` +
          `${this.queuedBytes} bytes waiting, at most ${maxQueued}); not run`);
      }
      job = this.decode(stream, id, arrival, bytes, scan);
    } catch (e) {
      const r = e instanceof WireRejection ? e
        : e instanceof UserError ? new WireRejection(grpc.status.INVALID_ARGUMENT, e.message)
          : new WireRejection(grpc.status.INTERNAL, `bug: ${(e as Error).message}`);
      if (r.code === grpc.status.INTERNAL) this.log(`request ${id}: ${(e as Error).stack}`);
      this.respond(stream, { id, error: { code: r.code, message: r.message } });
      return;
    }
    stream.ids.set(id, []);
    if (this.opts.hooks?.onRequest) {
      const req = job.decoded;
      const { batch } = req;
      const routesByExpert: Record<number, number> = {};
      for (const g of batch.groups) routesByExpert[g.expert] = g.rows.length;
      job.scope = this.opts.hooks.onRequest({
        id, stepId: req.stepId, layer: batch.layer, tokens: batch.nRows, routes: req.routes,
        experts: batch.groups.map((g) => g.expert), routesByExpert,
        wire: req.wire, traceContext: req.traceContext, bytesIn: req.bytesIn,
      });
    }
    job.wireBytes = bytes.length;
    job.seq = ++this.acceptedJobs;
    this.queuedBytes += job.wireBytes;
    this.queue.push(job);
    void this.pump();
  }

  /** Validates a request against what this node holds and decodes it. */
  private decode(stream: OpenStream, id: number, arrival: bigint, bytes: Buffer, scan: RequestScan): Job {
    const store = this.store;
    if (!store) throw new WireRejection(grpc.status.UNAVAILABLE, 'weights are still loading (wait for health SERVING)');
    const { numLayers, hiddenSize: H, intermediateSize: I } = store.dims;
    // Counts before protobufjs makes objects of them (the exact check per layer follows decoding). int8 is the
    // densest encoding (a byte per value), so the hidden bytes hold at most this many rows whatever `count`
    // claims, and a row goes at most once to each expert of the layer.
    const rows = Math.max(1, Math.min(scan.hiddenCount, Math.floor(scan.hiddenBytes / H)));
    if (scan.routes > rows * store.dims.numExperts) {
      throw new WireRejection(grpc.status.INVALID_ARGUMENT, `routes: ${scan.routes} routes for ${rows} hidden rows, but a row goes at most ` +
        `once to each of the ${store.dims.numExperts} experts of a layer (at most ${rows * store.dims.numExperts} routes)`);
    }
    if (scan.traceEntries > MAX_TRACE_ENTRIES) {
      throw new WireRejection(grpc.status.INVALID_ARGUMENT, `trace_context: ${scan.traceEntries} entries, at most ${MAX_TRACE_ENTRIES} (traceparent, tracestate)`);
    }
    const decoded = readExpertRequest(bytes, store, maskBytes(store.dims.intermediateSize));
    return { stream, id, arrival, timeoutMs: decoded.timeoutMs, decoded, wireBytes: 0, seq: 0 };
  }

  /** Runs queued jobs one at a time (the native backend serialises ops anyway; this keeps queue time honest). */
  private async pump(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      let job: Job | undefined;
      while ((job = this.queue.shift())) {
        this.queuedBytes -= job.wireBytes;
        try {
          await this.runJob(job);
        } finally {
          this.jobDone(job.seq);
        }
      }
    } finally {
      this.running = false;
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  private jobDone(seq: number): void {
    this.finishedJobs = seq;
    if (this.jobWaiters.length === 0) return;
    const ready = this.jobWaiters.filter((w) => w.seq <= seq);
    this.jobWaiters = this.jobWaiters.filter((w) => w.seq > seq);
    for (const w of ready) w.resolve();
  }

  private async runJob(job: Job): Promise<void> {
    const queueUs = usSince(job.arrival);
    const end = (result: NodeRequestResult) => job.scope && job.scope.end?.(result);
    if (!job.stream.open) {
      end({ ok: false, code: grpc.status.CANCELLED, message: 'stream closed', queueUs, computeUs: 0, activeNeurons: 0 });
      this.settle(job.stream);
      this.release(job.stream, job.id);
      return;
    }
    if (job.timeoutMs > 0 && queueUs > job.timeoutMs * 1000) {
      const message = `waited ${(queueUs / 1000).toFixed(1)} ms in the queue, past its ${job.timeoutMs} ms deadline`;
      this.respond(job.stream, { id: job.id, error: { code: grpc.status.DEADLINE_EXCEEDED, message }, queueUs }, true);
      end({ ok: false, code: grpc.status.DEADLINE_EXCEEDED, message, queueUs, computeUs: 0, activeNeurons: 0 });
      return;
    }
    const t0 = process.hrtime.bigint();
    try {
      const store = this.store!;
      const r = await store.run(job.decoded.batch);
      const computeUs = usSince(t0);
      const bytes = writeExpertResult(job.id, job.decoded, r.out, r.active, store.dims.hiddenSize, { queueUs, computeUs });
      this.respond(job.stream, { id: job.id, bytes }, true);
      end({ ok: true, queueUs, computeUs, activeNeurons: r.active.reduce((a, b) => a + b, 0),
        bytesOut: rowWireBytes(job.decoded.reply, store.dims.hiddenSize) * job.decoded.batch.nRows });
    } catch (e) {
      const message = `expert computation failed: ${(e as Error).message}`;
      this.log(`request ${job.id}: ${(e as Error).stack}`);
      this.respond(job.stream, { id: job.id, error: { code: grpc.status.INTERNAL, message }, queueUs, computeUs: usSince(t0) }, true);
      end({ ok: false, code: grpc.status.INTERNAL, message, queueUs, computeUs: usSince(t0), activeNeurons: 0 });
    }
  }

  /** Writes an answer; `queued`: it answers a queued request, whose id is free again after it. */
  private respond(stream: OpenStream, res: ExpertResponse | { id: number; bytes: Buffer }, queued = false): void {
    if (stream.open) {
      try {
        stream.peer.write('bytes' in res ? res.bytes : writeExpertResponse(res));
      } catch (e) {
        this.log(`cannot write response ${String(res.id)}: ${(e as Error).message}`);
      }
    }
    if (queued) this.release(stream, Number(res.id));
    this.settle(stream);
  }

  /** A queued request was answered: the answers of later requests that reused its id follow it. */
  private release(stream: OpenStream, id: number): void {
    const reused = stream.ids.get(id) ?? [];
    stream.ids.delete(id);
    for (const res of reused) this.respond(stream, res);
  }

  /** Ends a stream with a status (every request on it is dropped). */
  private failStream(stream: OpenStream, code: grpc.status, details: string): void {
    if (!stream.open) return;
    stream.open = false;
    this.streams.delete(stream);
    stream.peer.fail(code, details);
  }

  private settle(stream: OpenStream): void {
    stream.pending--;
    this.finishIfDone(stream);
  }

  /** The coordinator half-closed and every answer is out: end our side too. */
  private finishIfDone(stream: OpenStream): void {
    if (stream.ended && stream.pending === 0 && stream.open) {
      stream.open = false;
      this.streams.delete(stream);
      stream.peer.end();
    }
  }
}

export function createServer(opts: ExpertNodeServerOptions = {}): ExpertNodeServer {
  return new ExpertNodeServer(opts);
}

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/** host:port as gRPC binds it (an IPv6 host in brackets). */
function grpcAddress(host: string, port: number): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]:${port}` : `${host}:${port}`;
}
