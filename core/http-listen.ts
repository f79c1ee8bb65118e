// Starting and stopping the small HTTP servers (the API, the loading answer,
// the metrics port) the same way: where it listens as a URL, errors as they come,
// and how long and how many clients may hold it.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { UserError } from './errors';

export interface Listening {
  port: number;
  host: string;
  /** http://host:port (IPv6 hosts in brackets) */
  url: string;
}

/**
 * Listens on host:port (0 = a free port). A port that cannot be had (EADDRINUSE, EACCES, ...) is
 * a UserError naming `flag`, the flag the port came from.
 */
export function listenHttp(server: http.Server, port: number, host: string, flag = '--port'): Promise<Listening> {
  return new Promise((resolve, reject) => {
    const fail = (e: NodeJS.ErrnoException) =>
      reject(new UserError(`${flag} ${port}: cannot listen on ${host}:${port} (${e.code ?? e.message}); pick another port`));
    server.once('error', fail);
    server.listen(port, host, () => {
      server.off('error', fail);
      const a = server.address() as AddressInfo;
      const h = a.family === 'IPv6' ? `[${a.address}]` : a.address;
      resolve({ port: a.port, host: a.address, url: `http://${h}:${a.port}` });
    });
  });
}

/** Stops listening and drops every open connection at once. */
export function closeHttpNow(server: http.Server): Promise<void> {
  return new Promise<void>((done) => {
    server.close(() => done());
    server.closeAllConnections();
  });
}

export interface ClientLimits {
  /** A whole request (headers and body) must arrive within this. Responses may take longer. */
  requestTimeoutMs: number;
  /** Headers must arrive within this (default 10 s, at most requestTimeoutMs). */
  headersTimeoutMs?: number;
  /** Open sockets at most. */
  maxConnections: number;
}

/**
 * An HTTP server whose clients cannot hold it: a request that stops coming gets 408 after the
 * timeout (Node's defaults would keep its socket 300 s), a malformed one 400, and its connection
 * is closed; at most `maxConnections` sockets.
 */
export function createBoundedServer(limits: ClientLimits, listener: http.RequestListener): http.Server {
  const requestTimeout = limits.requestTimeoutMs;
  const server = http.createServer(
    {
      requestTimeout,
      headersTimeout: Math.min(limits.headersTimeoutMs ?? 10_000, requestTimeout),
      // How often those timeouts are checked (Node's default, 30 s, would let a slow client hold on that much longer).
      connectionsCheckingInterval: Math.max(100, Math.min(1000, requestTimeout / 4)),
    },
    listener,
  );
  server.maxConnections = limits.maxConnections;
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    const status = err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request';
    if (socket.writable) socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\n\r\n`);
    else socket.destroy();
  });
  return server;
}
