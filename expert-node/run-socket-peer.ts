// The node's side of one run socket (core/wire/run-frames.ts): checks the magic, answers it,
// splits REQUEST frames out for the server's Run handling, answers pings, and writes responses,
// END and ERROR frames. The server sees it as a RunPeer, the same as a gRPC Run stream.
import type net from 'node:net';
import {
  errorPayload, FrameError, FrameReader, frameHeader, FrameType, MagicReader, RUN_SOCKET_IDLE_MS, RUN_SOCKET_MAGIC,
} from '../core/wire/run-frames';

/** Where a Run stream's answers go (a gRPC stream or a run socket). */
export interface RunPeer {
  write(bytes: Buffer): void;
  /** No more answers: end the stream. */
  end(): void;
  /** Ends the stream with a status; the requests on it are dropped. */
  fail(code: number, detail: string): void;
}

/** What the server does with a stream's events. */
export interface RunStreamEvents {
  data(bytes: Buffer): void;
  /** The client will send no more (it may still read answers). */
  ended(): void;
  /** The connection is gone. */
  closed(): void;
}

const INVALID_ARGUMENT = 3;
/** After an ERROR or END frame, a client that keeps the connection open is dropped this much later. */
const LINGER_MS = 5_000;
/**
 * Answers a client has not read yet, past which the node stops reading its requests until they drain: a client
 * that sends and never reads cannot make the node buffer answers without bound (TCP then holds the client back).
 */
export const MAX_UNREAD_ANSWER_BYTES = 64 * 1024 * 1024;

/** Serves one run socket; `attach` makes the stream once the magic checked out. */
export function serveRunSocket(socket: net.Socket, attach: (peer: RunPeer) => RunStreamEvents,
  opts: { idleMs?: number; maxUnreadBytes?: number } = {}): void {
  const maxUnread = opts.maxUnreadBytes ?? MAX_UNREAD_ANSWER_BYTES;
  socket.setNoDelay(true);
  // A client that half-closes after its requests still reads their answers (as a gRPC stream it ended
  // itself): the node ends its side after END, not on the client's FIN (the listener's default).
  socket.allowHalfOpen = true;
  const magic = new MagicReader();
  let events: RunStreamEvents | null = null;
  let finished = false;
  let heldBack = false;
  const reader = new FrameReader([FrameType.REQUEST, FrameType.PING, FrameType.PONG]);

  const send = (type: FrameType, payload?: Buffer) => {
    if (socket.destroyed || !socket.writable) return;
    socket.cork();
    socket.write(frameHeader(type, payload?.length ?? 0));
    if (payload && payload.length) socket.write(payload);
    socket.uncork();
    if (!heldBack && socket.writableLength > maxUnread) {
      heldBack = true;
      socket.pause();
      socket.once('drain', () => {
        heldBack = false;
        socket.resume();
      });
    }
  };
  const finish = (type: FrameType, payload?: Buffer) => {
    if (finished) return;
    finished = true;
    send(type, payload);
    socket.end();
    setTimeout(() => socket.destroy(), LINGER_MS).unref();
  };
  const peer: RunPeer = {
    write: (bytes) => {
      if (!finished) send(FrameType.RESPONSE, bytes);
    },
    end: () => finish(FrameType.END),
    fail: (code, detail) => finish(FrameType.ERROR, errorPayload(code, detail)),
  };

  const onFrame = (type: FrameType, payload: Buffer) => {
    if (finished) return;
    if (type === FrameType.REQUEST) events!.data(payload);
    else if (type === FrameType.PING) send(FrameType.PONG);
  };
  socket.on('data', (chunk: Buffer) => {
    if (finished) return;
    if (!events) {
      // The magic; frames may follow it in the same chunk.
      const rest = magic.push(chunk);
      if (rest === 'bad') {
        socket.destroy(); // neither HTTP/2 nor this protocol: nothing to answer in
        return;
      }
      if (rest === 'more') return;
      socket.write(RUN_SOCKET_MAGIC);
      events = attach(peer);
      chunk = rest;
    }
    try {
      reader.push(chunk, onFrame);
    } catch (e) {
      if (!(e instanceof FrameError)) throw e;
      peer.fail(INVALID_ARGUMENT, `run socket: ${e.message}`);
      events.closed();
    }
  });
  socket.on('end', () => {
    if (events) events.ended();
    else socket.destroy(); // closed before its magic: nothing to answer
  });
  socket.on('close', () => events?.closed());
  // The client pings an idle connection (RUN_SOCKET_PING_MS): silence this long means it is gone.
  socket.setTimeout(opts.idleMs ?? RUN_SOCKET_IDLE_MS, () => socket.destroy());
  socket.resume();
}
