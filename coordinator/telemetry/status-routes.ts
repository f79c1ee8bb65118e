// HTTP routes of the status page, mounted by the coordinator's HTTP server:
//
//   GET /              the page (web/status/index.html, shipped in the package)
//   GET /status.js     its script, /status.css its style
//   GET /status.json   the status JSON (status.ts); also at /v1/status
//
// With an API key both JSON paths need it (the HTTP server checks before routing here): they
// name nodes, the shard layout and recent errors. The page's files stay open; the page sends
// the key from its URL fragment (/#key=KEY).
//
// Files are read once at start-up; no build step, nothing fetched from a CDN.
import fs from 'node:fs';
import type http from 'node:http';
import path from 'node:path';
import { buildStatus, type StatusJson } from './status';
import type { EngineObservability } from './observe';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
};

/** web/status from the sources (coordinator/telemetry) and from the build (dist/coordinator/telemetry). */
export function statusPageDir(): string {
  const candidates = [path.resolve(__dirname, '..', '..', 'web', 'status'), path.resolve(__dirname, '..', '..', '..', 'web', 'status')];
  const dir = candidates.find((d) => fs.existsSync(path.join(d, 'index.html')));
  if (!dir) throw new Error(`status page not found (looked in ${candidates.join(', ')})`);
  return dir;
}

export type StatusRoute = (req: http.IncomingMessage, res: http.ServerResponse, pathname: string) => boolean;

/**
 * A route handler for the HTTP server: answers the status page's paths and
 * returns true, or returns false for any other path. `status` builds the JSON
 * (default: from the engine's observability).
 */
export function statusRoutes(source: EngineObservability | (() => StatusJson)): StatusRoute {
  const dir = statusPageDir();
  const files = new Map<string, { type: string; body: Buffer }>();
  for (const name of ['index.html', 'status.js', 'status.css']) {
    files.set(name === 'index.html' ? '/' : `/${name}`, { type: TYPES[path.extname(name)], body: fs.readFileSync(path.join(dir, name)) });
  }
  const status = typeof source === 'function' ? source : () => buildStatus(source);
  return (req, res, pathname) => {
    const file = files.get(pathname === '/index.html' ? '/' : pathname);
    const isJson = pathname === '/status.json' || pathname === '/v1/status';
    if (!file && !isJson) return false;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' });
      res.end(`${req.method} is not allowed on ${pathname}\n`);
      return true;
    }
    const body = file ? file.body : Buffer.from(JSON.stringify(status()));
    res.writeHead(200, {
      'content-type': file ? file.type : 'application/json',
      'content-length': body.length,
      'cache-control': 'no-store',
    });
    res.end(req.method === 'HEAD' ? undefined : body);
    return true;
  };
}
