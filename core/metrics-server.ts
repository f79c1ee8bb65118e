// A small HTTP server answering GET /metrics (Prometheus text of a Registry) and
// GET /health, for processes without an HTTP server of their own: expert nodes
// (`--metrics-port`) and batch workers (`worker --metrics-port`).
import { closeHttpNow, createBoundedServer, listenHttp } from './http-listen';
import { metrics as defaultRegistry, PROMETHEUS_CONTENT_TYPE, type Registry } from './metrics';

export interface MetricsServer {
  port: number;
  url: string;
  close(): Promise<void>;
}

/** Listens on host:port (0 = any free port); a port in use is a UserError naming the flag. */
export function startMetricsServer(port: number, host: string, registry: Registry = defaultRegistry, flag = '--metrics-port'): Promise<MetricsServer> {
  // A scraper sends a bodiless GET: slow or idle sockets get little time, and few may be open at once.
  const server = createBoundedServer({ requestTimeoutMs: 10_000, maxConnections: 256 }, (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET' }).end();
      return;
    }
    if (path === '/metrics') {
      const body = registry.text();
      res.writeHead(200, { 'content-type': PROMETHEUS_CONTENT_TYPE, 'content-length': Buffer.byteLength(body) });
      res.end(req.method === 'HEAD' ? undefined : body);
    } else if (path === '/health') {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}');
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics\n');
    }
  });
  return listenHttp(server, port, host, flag).then((l) => ({ port: l.port, url: `${l.url}/metrics`, close: () => closeHttpNow(server) }));
}
