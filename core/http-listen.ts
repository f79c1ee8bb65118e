// Starting and stopping the small HTTP servers (the API, the loading answer,
// the metrics port) the same way: where it listens as a URL, errors as they come.
import type http from 'node:http';
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
