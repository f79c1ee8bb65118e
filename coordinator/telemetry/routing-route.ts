// GET /v1/stats/routing: the routing.json of a running coordinator (the engine's
// RoutingCollector plus ExpertStats' per-node latency), for `turbosparse stats
// --export` and the placement tools. Under /v1/, so the HTTP server asks for the
// API key first when there is one.
import type http from 'node:http';
import type { RoutingStats } from '../../core/placement/routing-stats';
import type { EngineObservability } from './observe';
import type { StatusRoute } from './status-routes';

export const ROUTING_STATS_PATH = '/v1/stats/routing';

/** The engine's routing statistics since start, as routing.json (`source`: who collected them). */
export function buildRoutingStats(obs: EngineObservability, source: RoutingStats['source']): RoutingStats {
  obs.flush(); // finished calls' deferred bookkeeping into the node summaries
  const c = obs.engine.config;
  // Node names as the status page shows them -> their addresses (in-process experts: "local").
  const addresses = new Map<string, string>();
  for (const h of obs.nodes()) addresses.set(h.name ?? h.address, h.address);
  return obs.routing.snapshot({
    source,
    model: { name: obs.modelName, top_k: c.topK, hidden_size: c.hiddenSize },
    nodes: obs.stats.snapshot().nodes,
    addresses,
  });
}

export function routingStatsRoute(obs: EngineObservability): StatusRoute {
  return (req: http.IncomingMessage, res: http.ServerResponse, pathname: string) => {
    if (pathname !== ROUTING_STATS_PATH) return false;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' });
      res.end(`${req.method} is not allowed on ${pathname}\n`);
      return true;
    }
    const body = Buffer.from(JSON.stringify(buildRoutingStats(obs, 'serve')));
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length, 'cache-control': 'no-store' });
    res.end(req.method === 'HEAD' ? undefined : body);
    return true;
  };
}
