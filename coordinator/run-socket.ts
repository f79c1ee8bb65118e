// The coordinator's side of a run socket (core/wire/run-frames.ts): Run's requests and responses
// over one TCP (or TLS) connection to the node's service port, without HTTP/2. Writes start at
// once (Node buffers them until the connection is up); `ready` resolves when the node has
// answered the magic, and rejects with `RunSocketUnsupported` when it answered something else
// (an older node: gRPC only).
import net from 'node:net';
import tls from 'node:tls';
import {
  FrameError, FrameReader, frameHeader, FrameType, MagicReader, readErrorPayload, RUN_SOCKET_ALPN, RUN_SOCKET_MAGIC,
  RUN_SOCKET_PING_MS, RUN_SOCKET_PING_TIMEOUT_MS,
} from '../core/wire/run-frames';
import type { ChannelTls } from './tls-diagnosis';

/** The node answered the magic with something else: it serves Run over gRPC only. */
export class RunSocketUnsupported extends Error {}

export interface RunSocketEvents {
  /** A RESPONSE frame: ExpertResponse bytes (a view of the received bytes). */
  response(bytes: Buffer): void;
  /** The connection failed or ended; nothing more comes. `code` is a gRPC status. Called once. */
  closed(code: number, detail: string): void;
}

const UNAVAILABLE = 14;
const INTERNAL = 13;
/** A plaintext socket's read buffer: one read takes at most this much (the kernel keeps the rest). */
const READ_BUFFER_BYTES = 256 * 1024;

export class RunSocket {
  readonly ready: Promise<void>;
  private readonly socket: net.Socket;
  private readonly reader = new FrameReader([FrameType.RESPONSE, FrameType.ERROR, FrameType.END, FrameType.PING, FrameType.PONG]);
  private readonly magic = new MagicReader();
  private done = false;
  private pingTimer: NodeJS.Timeout | null = null;
  private settleReady!: { resolve: () => void; reject: (e: Error) => void };

  /** `tls` null: plaintext. Throws nothing: a failure to connect arrives as `closed`. */
  constructor(readonly address: string, target: { host: string; port: number }, tlsFiles: ChannelTls | null,
    private readonly events: RunSocketEvents) {
    this.ready = new Promise((resolve, reject) => (this.settleReady = { resolve, reject }));
    this.ready.catch(() => undefined);
    this.socket = tlsFiles
      ? tls.connect({
        host: target.host, port: target.port, ca: tlsFiles.ca, cert: tlsFiles.cert, key: tlsFiles.key,
        servername: net.isIP(target.host) ? undefined : target.host, ALPNProtocols: [RUN_SOCKET_ALPN], minVersion: 'TLSv1.2',
      })
      // Plaintext reads land in one reused buffer (net's onread) instead of going through the Readable
      // stream: that skips the stream's per-chunk work and the tick it takes before the awaiting call
      // resumes (20-30 us of each response on the 2-vCPU VM). Each chunk is copied out, since frames
      // split over reads keep views of it.
      : net.connect({ host: target.host, port: target.port,
        onread: { buffer: Buffer.allocUnsafe(READ_BUFFER_BYTES), callback: (n, buf) => {
          this.onData(Buffer.from(buf.subarray(0, n)));
          return true;
        } } });
    this.socket.setNoDelay(true);
    this.socket.write(RUN_SOCKET_MAGIC);
    if (tlsFiles) this.socket.on('data', (chunk: Buffer) => this.onData(chunk));
    this.socket.on('error', (e: Error) => {
      // An older node under TLS offers ALPN h2 only: the handshake ends with this alert, never an answer.
      if (!this.magic.done && /no application protocol/i.test(e.message)) this.unsupported();
      this.close(UNAVAILABLE, e.message);
    });
    this.socket.on('close', () => this.close(UNAVAILABLE, this.magic.done ? 'the node closed the connection' : 'connection closed before the node answered'));
    // Idle for a while: ask the node whether it is still there.
    this.socket.setTimeout(RUN_SOCKET_PING_MS, () => {
      if (this.pingTimer || this.done) return;
      this.send(FrameType.PING);
      this.pingTimer = setTimeout(() => this.close(UNAVAILABLE, `no answer to a ping within ${RUN_SOCKET_PING_TIMEOUT_MS} ms`), RUN_SOCKET_PING_TIMEOUT_MS);
      this.pingTimer.unref();
    });
  }

  get closed(): boolean {
    return this.done;
  }

  /** Sends one ExpertRequest. */
  write(bytes: Buffer): void {
    if (this.done) throw new Error('run socket closed');
    this.socket.cork();
    this.socket.write(frameHeader(FrameType.REQUEST, bytes.length));
    this.socket.write(bytes);
    this.socket.uncork();
  }

  /** Drops the connection; `closed` is not called. */
  destroy(): void {
    this.done = true;
    this.clearPing();
    this.socket.destroy();
    this.settleReady.reject(new Error('run socket closed'));
  }

  private send(type: FrameType): void {
    if (!this.done) this.socket.write(frameHeader(type, 0));
  }

  private onData(chunk: Buffer): void {
    if (this.done) return;
    this.clearPing();
    if (!this.magic.done) {
      const rest = this.magic.push(chunk);
      if (rest === 'bad') {
        this.unsupported();
        this.close(UNAVAILABLE, 'the node does not serve the run socket');
        return;
      }
      if (rest === 'more') return;
      this.settleReady.resolve();
      chunk = rest;
    }
    try {
      this.reader.push(chunk, (type, payload) => {
        if (this.done) return;
        if (type === FrameType.RESPONSE) this.events.response(payload);
        else if (type === FrameType.PING) this.send(FrameType.PONG);
        else if (type === FrameType.END) this.close(UNAVAILABLE, 'the node closed the stream (shutting down)');
        else if (type === FrameType.ERROR) {
          const e = readErrorPayload(payload);
          this.close(e.code, e.detail);
        }
      });
    } catch (e) {
      if (!(e instanceof FrameError)) throw e;
      this.close(INTERNAL, `bad frame from the node: ${e.message}`);
    }
  }

  private unsupported(): void {
    this.settleReady.reject(new RunSocketUnsupported(`${this.address} does not serve the run socket (an older node?)`));
  }

  private clearPing(): void {
    if (this.pingTimer) clearTimeout(this.pingTimer);
    this.pingTimer = null;
  }

  private close(code: number, detail: string): void {
    if (this.done) return;
    this.done = true;
    this.clearPing();
    this.socket.destroy();
    this.settleReady.reject(new Error(detail));
    this.events.closed(code, detail);
  }
}
