// The run socket: the Run stream's messages (the same ExpertRequest / ExpertResponse bytes as
// proto/expert.proto) over a plain TCP or TLS connection to the node's service port, without
// HTTP/2 and grpc-js. A bare grpc-js echo costs about 3x a raw TCP echo of the same bytes on
// loopback (bench/RESULTS.md), and the Run stream pays that per layer per token.
//
// The node tells the two apart by the first byte a client sends: HTTP/2 starts with "PRI * HTTP/2.0",
// this protocol with RUN_SOCKET_MAGIC. Both sides send the magic first; a client whose node does not
// answer it (an older node: gRPC closes the connection) keeps using gRPC.
//
// Frame: u32 little-endian payload length, u8 type, payload.
//   REQUEST   coordinator -> node: ExpertRequest bytes
//   RESPONSE  node -> coordinator: ExpertResponse bytes
//   ERROR     node -> coordinator: u32 gRPC status code + UTF-8 detail; the node closes after it
//             (what a gRPC stream's status would say: a request that names no id, a bad frame)
//   END       node -> coordinator: no more responses (the node is draining); the node closes after it
//   PING/PONG either way: liveness while idle (the node closes a connection silent for RUN_SOCKET_IDLE_MS)
import { EXPERT_MAX_MESSAGE_BYTES } from './expert-proto';

export const RUN_SOCKET_MAGIC = Buffer.from('TSRUN/1\n', 'latin1');
/** TLS ALPN name of the protocol (the node offers it next to h2). */
export const RUN_SOCKET_ALPN = 'turbosparse-run/1';
export const FRAME_HEADER_BYTES = 5;

export const FrameType = { REQUEST: 1, RESPONSE: 2, ERROR: 3, END: 4, PING: 5, PONG: 6 } as const;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

/** The client pings an idle connection this often ... */
export const RUN_SOCKET_PING_MS = 20_000;
/** ... and gives up when nothing came back this long after a ping. */
export const RUN_SOCKET_PING_TIMEOUT_MS = 10_000;
/** The node closes a connection that sent nothing (no frame, no ping) this long. */
export const RUN_SOCKET_IDLE_MS = 3 * RUN_SOCKET_PING_MS;

export function frameHeader(type: FrameType, payloadBytes: number): Buffer {
  const h = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
  h.writeUInt32LE(payloadBytes, 0);
  h[4] = type;
  return h;
}

/** An ERROR frame's payload. */
export function errorPayload(code: number, detail: string): Buffer {
  const text = Buffer.from(detail, 'utf8');
  const p = Buffer.allocUnsafe(4 + text.length);
  p.writeUInt32LE(code >>> 0, 0);
  text.copy(p, 4);
  return p;
}

export function readErrorPayload(p: Buffer): { code: number; detail: string } {
  if (p.length < 4) return { code: 13, detail: `an ERROR frame of ${p.length} bytes (at least 4)` };
  return { code: p.readUInt32LE(0), detail: p.toString('utf8', 4) };
}

/** Reads the peer's magic, which may come split over chunks (both sides open with it). */
export class MagicReader {
  private got = 0;
  done = false;

  /** The rest of `chunk` once the magic is complete; 'more' while it is not; 'bad' when the bytes differ. */
  push(chunk: Buffer): Buffer | 'more' | 'bad' {
    const n = Math.min(RUN_SOCKET_MAGIC.length - this.got, chunk.length);
    if (!chunk.subarray(0, n).equals(RUN_SOCKET_MAGIC.subarray(this.got, this.got + n))) return 'bad';
    this.got += n;
    if (this.got < RUN_SOCKET_MAGIC.length) return 'more';
    this.done = true;
    return chunk.subarray(n);
  }
}

/** A frame the reader cannot accept; the connection ends with this. */
export class FrameError extends Error {}

/**
 * Splits received chunks into frames. A frame inside one chunk is a view of it (no copy); one
 * spread over chunks is copied once, when its last byte is in. Lengths above
 * EXPERT_MAX_MESSAGE_BYTES and unknown types throw FrameError before any payload is buffered.
 */
export class FrameReader {
  private head: Buffer | null = null;
  /** A frame being assembled across chunks: the parts so far (memory grows only as bytes arrive). */
  private partial: { type: FrameType; length: number; parts: Buffer[]; filled: number } | null = null;

  constructor(private readonly accepts: readonly FrameType[], private readonly maxBytes = EXPERT_MAX_MESSAGE_BYTES) {}

  /** Feeds a chunk; calls `onFrame` for each whole frame in order. */
  push(chunk: Buffer, onFrame: (type: FrameType, payload: Buffer) => void): void {
    let at = 0;
    while (at < chunk.length) {
      if (this.partial) {
        const p = this.partial;
        const n = Math.min(p.length - p.filled, chunk.length - at);
        p.parts.push(chunk.subarray(at, at + n));
        p.filled += n;
        at += n;
        if (p.filled === p.length) {
          this.partial = null;
          onFrame(p.type, Buffer.concat(p.parts, p.length));
        }
        continue;
      }
      // The header, possibly split over chunks.
      let header: Buffer;
      if (this.head || chunk.length - at < FRAME_HEADER_BYTES) {
        const have = this.head ? this.head.length : 0;
        const take = Math.min(FRAME_HEADER_BYTES - have, chunk.length - at);
        this.head = this.head ? Buffer.concat([this.head, chunk.subarray(at, at + take)]) : Buffer.from(chunk.subarray(at, at + take));
        at += take;
        if (this.head.length < FRAME_HEADER_BYTES) return;
        header = this.head;
        this.head = null;
      } else {
        header = chunk.subarray(at, at + FRAME_HEADER_BYTES);
        at += FRAME_HEADER_BYTES;
      }
      const length = header.readUInt32LE(0);
      const type = header[4] as FrameType;
      if (!this.accepts.includes(type)) throw new FrameError(`unknown frame type ${type}`);
      if (length > this.maxBytes) {
        throw new FrameError(`a frame of ${length} bytes is above the ${this.maxBytes}-byte message limit`);
      }
      if (chunk.length - at >= length) {
        const payload = chunk.subarray(at, at + length);
        at += length;
        onFrame(type, payload);
      } else {
        this.partial = { type, length, parts: [], filled: 0 };
      }
    }
  }

  /** Bytes of a frame received in part (a connection closed now cut a frame). */
  get buffered(): number {
    return (this.head?.length ?? 0) + (this.partial?.filled ?? 0);
  }
}
