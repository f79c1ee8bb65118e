// What `serve` answers while the model loads and the expert nodes connect (which
// may take minutes): /health 200, /ready 503 with the reason, every other route
// 503 as an OpenAI error. So a load balancer or a Kubernetes probe sees "alive,
// not ready" rather than a refused connection. The real server takes the same
// port once the engine is up.
import { closeHttpNow, createBoundedServer, listenHttp } from '../../core/http-listen';
import { ApiError, badTarget, methodNotAllowed, routePath } from '../api/errors';
import { guarded } from './guard';

export interface LoadingServer {
  port: number;
  url: string;
  close(): Promise<void>;
}

export function listenWhileLoading(port: number, host: string, what: string): Promise<LoadingServer> {
  const reason = `loading: ${what}`;
  // No route here reads a body: a slow client gets no more time than the serving server gives.
  const server = createBoundedServer({ requestTimeoutMs: 10_000, maxConnections: 1024 },
    guarded((req, res) => {
      const send = (status: number, body: unknown) => {
        req.resume();
        res.writeHead(status, { 'content-type': 'application/json', 'retry-after': '5', connection: 'close' });
        res.end(JSON.stringify(body));
      };
      const path = routePath(req.url);
      if (path === null) return send(400, badTarget().toJSON());
      if ((path === '/health' || path === '/ready') && req.method !== 'GET') {
        return send(405, methodNotAllowed(req.method ?? 'GET', path).toJSON());
      }
      if (path === '/health') return send(200, { status: 'ok', loading: true });
      if (path === '/ready') return send(503, { status: 'not ready', reason });
      send(503, new ApiError(503, `the server is still ${reason}; retry shortly`, 'service_unavailable', null, 'loading').toJSON());
    }),
  );
  return listenHttp(server, port, host).then((l) => ({ port: l.port, url: l.url, close: () => closeHttpNow(server) }));
}
