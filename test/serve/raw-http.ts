// HTTP at the socket level, for what fetch will not send (malformed request lines, half
// requests, random bytes) and for watching when the server closes a connection.
import net from 'node:net';

export interface RawReply {
  /** Everything the server sent. */
  text: string;
  /** Whether the server closed the connection (false: we stopped waiting after `waitMs`). */
  closed: boolean;
  /** From the connection to the close (or to giving up). */
  ms: number;
}

/** host:port of an http:// URL. */
export function hostPort(url: string): { host: string; port: number } {
  const u = new URL(url);
  return { host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port) };
}

/**
 * Connects, writes `data`, and reads until the server closes the connection or `waitMs` passes.
 * The connection stays open for writing as a slow client keeps it, unless `end` (then the
 * server sees the end of the request stream).
 */
export function rawExchange(url: string, data: string | Buffer, waitMs = 5000, end = false): Promise<RawReply> {
  const { host, port } = hostPort(url);
  return new Promise((resolve) => {
    const t0 = performance.now();
    const chunks: Buffer[] = [];
    const socket = net.connect({ host, port });
    let done = false;
    const finish = (closed: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ text: Buffer.concat(chunks).toString('latin1'), closed, ms: performance.now() - t0 });
    };
    const timer = setTimeout(() => finish(false), waitMs);
    socket.on('connect', () => (end ? socket.end(data) : socket.write(data)));
    socket.on('data', (d) => chunks.push(d));
    socket.on('close', () => finish(true));
    socket.on('error', () => finish(true)); // a reset is a close too
  });
}

/** The status code of the first response in a raw reply, or null when there was none. */
export function statusOf(reply: RawReply): number | null {
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(reply.text);
  return m ? Number(m[1]) : null;
}
