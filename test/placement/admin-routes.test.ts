// The admin route on its own (a plain HTTP server on port 0): a coordinator without
// expert nodes says why it cannot rebalance, other methods are 405, an oversized body
// is a 413 without reading it all, other paths are not its business.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { adminRoutes, REBALANCE_PATH } from '../../coordinator/http/admin-routes';
import { spawnCli } from '../serve/serve-process';

describe('admin routes without expert nodes', () => {
  let server: http.Server;
  let url: string;
  beforeAll(async () => {
    const route = adminRoutes(undefined);
    server = http.createServer((req, res) => {
      if (!route(req, res, new URL(req.url ?? '/', 'http://x').pathname)) {
        res.writeHead(404);
        res.end('not mine');
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  test('GET and POST answer a one-line 400 naming the flag; PUT is a 405; other paths fall through', async () => {
    for (const method of ['GET', 'POST']) {
      const res = await fetch(`${url}${REBALANCE_PATH}`, { method, body: method === 'POST' ? '{}' : undefined });
      expect(res.status).toBe(400);
      const body = (await res.json()) as { error: { message: string; code: string } };
      expect(body.error.code).toBe('no_expert_nodes');
      expect(body.error.message).toMatch(/--experts cluster:N or a shard-map FILE/);
    }
    expect((await fetch(`${url}${REBALANCE_PATH}`, { method: 'PUT', body: '{}' })).status).toBe(405);
    expect((await fetch(`${url}/v1/admin/other`)).status).toBe(404);
  });

  test('a 20 MiB body to a coordinator without nodes gets the same 400 (never read)', async () => {
    const res = await fetch(`${url}${REBALANCE_PATH}`, { method: 'POST', body: 'x'.repeat(20 * 2 ** 20) });
    expect(res.status).toBe(400);
  });
});

test('serve --rebalance-every with in-process experts is one line before anything loads', async () => {
  const p = spawnCli(['serve', '--model', '/nonexistent/model', '--rebalance-every', '1']);
  expect(await p.exited).toBe(2);
  expect(p.stderr().trim()).toBe('error: --rebalance-every: needs expert nodes to move experts between (--experts cluster:N or a shard-map FILE)');
}, 30_000);
