// One coordinator -> expert-node connection: a gRPC channel for unary `Info`, the
// admin calls and the standard health `Check`, and one persistent Run stream that
// carries every call (matched by request id, answered in any order). The Run
// stream is a run socket (run-socket.ts: the same messages over plain TCP/TLS,
// without HTTP/2) when the node serves one, else grpc-js's bidirectional `Run`.
// Requests are serialised here (not inside grpc-js) so their exact wire size
// is known for the per-node byte counts; responses are read without protobufjs
// (core/wire/expert-response-bytes.ts).
import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import {
  EXPERT_MAX_MESSAGE_BYTES, EXPERT_SERVICE_NAME, expertProto, type ExpertRequest, type ExpertResponse__Output,
  type InfoResponse__Output,
} from '../core/wire/expert-proto';
import { UserError } from '../core/errors';
import { readExpertResponse } from '../core/wire/expert-response-bytes';
import { hostPort } from '../core/host-port';
import { RunSocket, RunSocketUnsupported } from './run-socket';
import { type ChannelTls, diagnoseConnectFailure } from './tls-diagnosis';

/** Channel options for expert-node connections; see the comment on each key. */
export const EXPERT_CHANNEL_OPTIONS: grpc.ChannelOptions = {
  // Big prefill batches: up to 256 MiB each way, same as the node's limits.
  'grpc.max_receive_message_length': EXPERT_MAX_MESSAGE_BYTES,
  'grpc.max_send_message_length': EXPERT_MAX_MESSAGE_BYTES,
  // The Run stream is idle between generations: ping every 20 s (a node
  // accepts pings without calls) and drop the connection after 10 s without an
  // ack, so a dead node is noticed even when no step is running.
  'grpc.keepalive_time_ms': 20_000,
  'grpc.keepalive_timeout_ms': 10_000,
  'grpc.keepalive_permit_without_calls': 1,
  // We retry on replicas ourselves; grpc-js retries would buffer every stream
  // message until the first response (copying hidden states for nothing).
  'grpc.enable_retries': 0,
  // A restarted node (or a failed-over one) should be re-reached within a
  // second, not after grpc's default 1-120 s exponential backoff.
  'grpc.initial_reconnect_backoff_ms': 200,
  'grpc.max_reconnect_backoff_ms': 2_000,
  // Never let the channel go idle and tear down the connection between steps:
  // reconnecting would add a handshake to the next layer's round trip.
  'grpc.client_idle_timeout_ms': 2 ** 31 - 1,
  // Each node gets its own subchannel so one node's failure cannot be shared.
  'grpc.use_local_subchannel_pool': 1,
  // HTTP/2 flow control: with the default 64 KiB window a response larger than that (16 rows at hidden
  // 1024 in f32 is 64 KiB + headers) waits a WINDOW_UPDATE round trip mid-message. grpc-js 1.14 sets
  // this as the initial stream window and widens the connection window to it. (The node's receive window
  // is Node's default: grpc-js's server has no such option.)
  'grpc-node.flow_control_window': 16 * 1024 * 1024,
  // No compression: hidden states do not compress, and it would cost a copy and CPU per message. grpc-js
  // compresses a request only when this names an algorithm, and its server never compresses responses.
  // Nagle is off on both ends: grpc-js calls setNoDelay() on its client socket, and Node's Http2Session
  // does on every session socket (server side too).
  'grpc.default_compression_algorithm': grpc.compressionAlgorithms.identity,
};

/** How to reach a node: credentials (mTLS plugs in here) and channel options. */
export interface ChannelSetup {
  credentials: grpc.ChannelCredentials;
  /** Merged over EXPERT_CHANNEL_OPTIONS. */
  options?: grpc.ChannelOptions;
  /** What TLS credentials were made of, to name the cause of a failed handshake (tls-diagnosis.ts), and for the run socket. */
  tls?: ChannelTls;
  /** The credentials are plaintext: the run socket may be plain TCP. (Neither this nor `tls`: gRPC only.) */
  plaintext?: boolean;
}
export type ChannelFactory = (address: string) => ChannelSetup;

/** Plaintext, for loopback and trusted networks. */
export const insecureChannel: ChannelFactory = () => ({ credentials: grpc.credentials.createInsecure(), plaintext: true });

/**
 * How Run's calls travel: `auto` a run socket when the node serves one, else gRPC; `socket` a run
 * socket or the node counts as down; `grpc` always grpc-js's Run stream.
 */
export const RUN_TRANSPORTS = ['auto', 'socket', 'grpc'] as const;
export type RunTransport = (typeof RUN_TRANSPORTS)[number];

/**
 * TLS to every node (PEM bytes, see core/tls-files.ts): the node's certificate
 * must be signed by `ca` (the system's public roots when absent) and name the
 * host of its shard-map address; `cert` + `key` are presented to nodes that
 * require a client certificate (mTLS).
 */
export function tlsChannel(files: { cert?: Buffer; key?: Buffer; ca?: Buffer }): ChannelFactory {
  const credentials = grpc.credentials.createSsl(files.ca ?? null, files.key ?? null, files.cert ?? null);
  return () => ({ credentials, tls: files });
}

/**
 * The cause in grpc-js's "No connection established. Last error: ..." detail,
 * OpenSSL's codes dropped ("tlsv13 alert certificate required"); '' when none.
 */
export function lastConnectError(detail: string): string {
  const m = /Last error: ([\s\S]*?)(?:\s*\(\d{4}-\d\d-\d\dT[^)]*\))?\.?\s*Resolution note/.exec(detail);
  if (!m) return '';
  const ssl = /error:[0-9A-Fa-f]+:[^:]*:[^:]*:([^:]+):/.exec(m[1]);
  return (ssl ? ssl[1] : m[1].replace(/^Error: /, '')).trim();
}

/** A failed call to a node, with its gRPC status code. */
export class NodeCallError extends Error {
  constructor(readonly address: string, readonly code: grpc.status, readonly detail: string) {
    super(`${address}: ${grpc.status[code] ?? code}: ${detail}`);
    this.name = 'NodeCallError';
  }
}

export interface CallReply {
  response: ExpertResponse__Output;
  bytesSent: number;
  bytesReceived: number;
}

interface Pending {
  resolve: (r: CallReply) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
  bytesSent: number;
}

type Sized = { size: number; message: ExpertResponse__Output };
type RunStream = grpc.ClientDuplexStream<Buffer, Sized>;

export type HealthStatus = 'SERVING' | 'NOT_SERVING' | 'UNKNOWN' | 'SERVICE_UNKNOWN';

export class ExpertClient {
  private readonly client: grpc.Client;
  private stream: RunStream | null = null;
  private socket: RunSocket | null = null;
  /** Which Run stream calls use: `unknown` until prepareRun() found out (gRPC meanwhile). */
  private runMode: 'unknown' | 'socket' | 'grpc';
  private preparing: Promise<void> | null = null;
  /** TLS files for the run socket; null: plaintext; undefined: no run socket possible (a custom channel). */
  private readonly socketTls: ChannelTls | null | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closed = false;
  private readonly tls: ChannelTls | null;

  constructor(readonly address: string, factory: ChannelFactory = insecureChannel, readonly transport: RunTransport = 'auto') {
    const setup = factory(address);
    this.client = new grpc.Client(address, setup.credentials, { ...EXPERT_CHANNEL_OPTIONS, ...setup.options });
    this.tls = setup.tls ?? null;
    this.socketTls = setup.tls ?? (setup.plaintext ? null : undefined);
    this.runMode = transport === 'grpc' ? 'grpc' : 'unknown';
  }

  /** The Run stream calls take now (bench, tests, logs). */
  get runTransport(): 'socket' | 'grpc' {
    return this.runMode === 'socket' ? 'socket' : 'grpc';
  }

  /**
   * Finds out whether the node serves a run socket and opens it (once; again after a node that did not
   * was restarted). Transport `auto`: a node that does not keeps gRPC; `socket`: rejects then, with a
   * UserError when the node is older or the channel allows no socket, with UNAVAILABLE when it fails.
   */
  prepareRun(timeoutMs: number): Promise<void> {
    if (this.runMode !== 'unknown' || this.closed) return Promise.resolve();
    // One at a time: the health check may ask again while a first try still waits.
    this.preparing ??= this.tryRunSocket(timeoutMs).finally(() => {
      this.preparing = null;
    });
    return this.preparing;
  }

  private async tryRunSocket(timeoutMs: number): Promise<void> {
    const target = hostPort(this.address);
    if (!target || this.socketTls === undefined) {
      if (this.transport === 'socket') {
        throw new UserError(`expert node ${this.address}: --expert-transport socket needs a host:port address and plaintext or --tls-* credentials`);
      }
      this.runMode = 'grpc';
      return;
    }
    const socket = this.openSocket(target);
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([socket.ready, new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      })]);
      if (this.closed) return socket.destroy();
      this.socket = socket;
      this.runMode = 'socket';
    } catch (e) {
      socket.destroy();
      if (e instanceof RunSocketUnsupported) {
        if (this.transport === 'socket') throw new UserError(`${e.message}: start it from this version, or use --expert-transport auto`);
        this.runMode = 'grpc';
        return;
      }
      if (this.transport === 'socket') throw new NodeCallError(this.address, grpc.status.UNAVAILABLE, `run socket: ${(e as Error).message}`);
      // auto: gRPC until the next prepareRun (the health check calls it when the node is back).
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Resolves when the channel is connected. Rejects after `timeoutMs` with the
   * channel's last error, or as soon as that error is a TLS mistake retrying
   * cannot fix, with a UserError naming the cause and the flag (tls-diagnosis.ts).
   */
  waitForReady(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const channel = this.client.getChannel();
    let diagnosed = '';
    let diagnosedAt = 0;
    return new Promise((resolve, reject) => {
      // grpc-js's own waitForReady only says "failed to connect"; a call carries the last error.
      const timedOut = () => {
        const fail = (why: string) => reject(new NodeCallError(this.address, grpc.status.UNAVAILABLE, `not reachable within ${timeoutMs} ms (${why})`));
        this.lastError().then((last) => fail(last ? `Failed to connect before the deadline; last error: ${last}` : 'Failed to connect before the deadline'));
      };
      const check = () => {
        const state = channel.getConnectivityState(true);
        if (state === grpc.connectivityState.READY) return resolve();
        if (state === grpc.connectivityState.SHUTDOWN) return reject(new NodeCallError(this.address, grpc.status.CANCELLED, 'client closed'));
        if (Date.now() >= deadline) return timedOut();
        if (state !== grpc.connectivityState.TRANSIENT_FAILURE) return watch(state);
        void this.lastError().then(async (last) => {
          // A cause is diagnosed once (again after 5 s: the node may have been restarted differently).
          if (last && (last !== diagnosed || Date.now() - diagnosedAt > 5_000)) {
            diagnosed = last;
            diagnosedAt = Date.now();
            const cause = await diagnoseConnectFailure(this.address, last, this.tls, Math.max(1, Math.min(2_000, deadline - Date.now())));
            if (cause) return reject(new UserError(cause));
          }
          watch(state);
        }).catch(() => watch(state));
      };
      // A failing channel may stay in TRANSIENT_FAILURE while its error changes (refused, then a bad
      // handshake once the node listens): look again every second even without a state change.
      const watch = (state: grpc.connectivityState) => {
        channel.watchConnectivityState(state, Math.min(deadline, Date.now() + 1_000), () => check());
      };
      check();
    });
  }

  /** The channel's last connection error (a call fails at once with it while the channel is failing); '' when none. */
  private lastError(): Promise<string> {
    return this.health(1_000).then(() => '', (e: NodeCallError) => lastConnectError(e.detail ?? ''));
  }

  info(timeoutMs: number): Promise<InfoResponse__Output> {
    const m = expertProto().service.Info;
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(m.path, m.requestSerialize, m.responseDeserialize, {}, new grpc.Metadata(),
        { deadline: Date.now() + timeoutMs }, (err, res) => {
          if (err) reject(new NodeCallError(this.address, err.code, err.details || err.message));
          else resolve(res!);
        });
    });
  }

  /**
   * Admin (live rebalancing): the node reads these pairs' weights from its model folder and answers its new
   * Info once every one serves (pairs already held are kept). INVALID_ARGUMENT for a pair outside the model,
   * RESOURCE_EXHAUSTED past the node's memory budget (nothing loaded then); DEADLINE_EXCEEDED after `timeoutMs`.
   */
  loadExperts(pairs: readonly { layer: number; expert: number }[], timeoutMs: number): Promise<InfoResponse__Output> {
    return this.changeExperts('LoadExperts', pairs, timeoutMs);
  }

  /** Admin: the node frees these pairs once no request still running or queued uses them; answers its new Info. */
  unloadExperts(pairs: readonly { layer: number; expert: number }[], timeoutMs: number): Promise<InfoResponse__Output> {
    return this.changeExperts('UnloadExperts', pairs, timeoutMs);
  }

  private changeExperts(method: 'LoadExperts' | 'UnloadExperts', pairs: readonly { layer: number; expert: number }[],
    timeoutMs: number): Promise<InfoResponse__Output> {
    const m = expertProto().service[method];
    const experts = pairs.map((p) => ({ layer: p.layer, expert: p.expert }));
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(m.path, m.requestSerialize, m.responseDeserialize, { experts }, new grpc.Metadata(),
        { deadline: Date.now() + timeoutMs }, (err, res) => {
          if (err) reject(new NodeCallError(this.address, err.code, err.details || err.message));
          else resolve(res!);
        });
    });
  }

  /** The standard health check of the ExpertNode service. */
  health(timeoutMs: number): Promise<HealthStatus> {
    const m = healthService.Check;
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(m.path, m.requestSerialize, m.responseDeserialize, { service: EXPERT_SERVICE_NAME },
        new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => {
          if (err) reject(new NodeCallError(this.address, err.code, err.details || err.message));
          else resolve((res as { status: HealthStatus }).status);
        });
    });
  }

  /**
   * Sends one request on the node's stream (opened on first use and after a
   * failure) and resolves with its response; rejects with DEADLINE_EXCEEDED
   * after `timeoutMs`, or when the stream fails. An `error` in the response
   * rejects too, with the node's status code.
   */
  call(req: Omit<ExpertRequest, 'id'>, timeoutMs: number): Promise<CallReply> {
    return this.callBytes((id) => expertProto().service.Run.requestSerialize({ ...req, id }), timeoutMs);
  }

  /** As call(), with the request's bytes written by `encode` for the id this call gets (expert-request-bytes.ts). */
  callBytes(encode: (id: number) => Buffer, timeoutMs: number): Promise<CallReply> {
    if (this.closed) return Promise.reject(new NodeCallError(this.address, grpc.status.CANCELLED, 'client closed'));
    const id = this.nextId++;
    const bytes = encode(id);
    return new Promise<CallReply>((resolve, reject) => {
      // After a busy spell of this process, timers run before the socket is read: an answer
      // that arrived in time is still waiting there. setImmediate lets it in before giving up.
      const timer = setTimeout(() => setImmediate(() => {
        if (!this.pending.delete(id)) return;
        reject(new NodeCallError(this.address, grpc.status.DEADLINE_EXCEEDED, `no answer within ${timeoutMs} ms`));
      }), timeoutMs);
      this.pending.set(id, { resolve, reject, timer, bytesSent: bytes.length });
      try {
        if (this.runMode === 'socket') this.runSocket().write(bytes);
        else this.runStream().write(bytes);
      } catch (e) {
        this.fail(grpc.status.UNAVAILABLE, `cannot write to the stream: ${(e as Error).message}`);
      }
    });
  }

  /**
   * Drops the stream and fails every call in flight (a node marked unhealthy). The run socket is negotiated
   * again by the next prepareRun (the node may come back as another version).
   */
  reset(reason: string): void {
    this.fail(grpc.status.UNAVAILABLE, reason);
    if (this.transport !== 'grpc') this.runMode = 'unknown';
  }

  get inFlight(): number {
    return this.pending.size;
  }

  close(): void {
    this.closed = true;
    this.fail(grpc.status.CANCELLED, 'client closed');
    this.client.close();
  }

  /** The open run socket, or a new one (a node restarted since; writes wait in it until connected). */
  private runSocket(): RunSocket {
    if (this.socket && !this.socket.closed) return this.socket;
    this.socket = this.openSocket(hostPort(this.address)!);
    return this.socket;
  }

  private openSocket(target: { host: string; port: number }): RunSocket {
    const socket: RunSocket = new RunSocket(this.address, target, this.socketTls ?? null, {
      response: (bytes) => {
        let message: ExpertResponse__Output;
        try {
          message = readExpertResponse(bytes);
        } catch (e) {
          if (this.socket === socket) this.fail(grpc.status.INTERNAL, `a response that does not parse: ${(e as Error).message}`);
          return;
        }
        this.answer(message, bytes.length);
      },
      closed: (code, detail) => {
        if (this.socket === socket) this.fail(code, detail);
      },
    });
    // Restarted as a node without it: auto goes back to gRPC, socket asks again at the next prepareRun (which
    // then fails naming why, so the node stays unhealthy); what was in flight fails over as for any restart.
    // (The failed socket's `closed` has already cleared this.socket when this runs.)
    socket.ready.catch((e: unknown) => {
      if (!(e instanceof RunSocketUnsupported) || (this.socket !== socket && this.socket !== null) || this.runMode !== 'socket') return;
      this.runMode = this.transport === 'auto' ? 'grpc' : 'unknown';
    });
    return socket;
  }

  /** A response on either transport settles its call. */
  private answer(message: ExpertResponse__Output, size: number): void {
    const id = Number(message.id);
    const p = this.pending.get(id);
    if (!p) return; // timed out earlier: the late answer is dropped
    this.pending.delete(id);
    clearTimeout(p.timer);
    if (message.error) {
      p.reject(new NodeCallError(this.address, message.error.code, message.error.message));
    } else {
      p.resolve({ response: message, bytesSent: p.bytesSent, bytesReceived: size });
    }
  }

  private runStream(): RunStream {
    if (this.stream) return this.stream;
    const m = expertProto().service.Run;
    const stream: RunStream = this.client.makeBidiStreamRequest<Buffer, Sized>(m.path, (b) => b,
      (buf) => ({ size: buf.length, message: readExpertResponse(buf) }));
    stream.on('data', ({ size, message }: Sized) => this.answer(message, size));
    stream.on('error', (err: grpc.ServiceError) => {
      if (this.stream === stream) this.fail(err.code ?? grpc.status.UNAVAILABLE, err.details || err.message);
    });
    // The node ended the stream (drain on shutdown): whatever is in flight must go elsewhere.
    stream.on('end', () => {
      if (this.stream === stream) this.fail(grpc.status.UNAVAILABLE, 'the node closed the stream (shutting down)');
    });
    this.stream = stream;
    return stream;
  }

  private fail(code: grpc.status, detail: string): void {
    const socket = this.socket;
    this.socket = null;
    socket?.destroy();
    const stream = this.stream;
    this.stream = null;
    if (stream) {
      stream.removeAllListeners('data');
      stream.on('error', () => undefined); // a cancelled stream still reports CANCELLED
      stream.cancel();
    }
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) {
      clearTimeout(p.timer);
      p.reject(new NodeCallError(this.address, code, detail));
    }
  }
}
