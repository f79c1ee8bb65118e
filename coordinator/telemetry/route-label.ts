// The `route` label of the coordinator's HTTP request metrics: the route's template, never the
// raw path (ids and typos would make a series each). Every path the server answers has its
// template here; anything else is `other`.
import { routePath } from '../api/errors';

/** Exact paths: the OpenAI API, vLLM's extras, probes, metrics, the status page's files and JSON, admin and stats. */
const EXACT = new Set([
  '/v1/completions', '/v1/chat/completions', '/v1/models', '/tokenize', '/detokenize', '/health', '/ready', '/metrics',
  '/', '/index.html', '/status.js', '/status.css', '/status.json', '/v1/status',
  '/v1/files', '/v1/batches', '/v1/admin/rebalance', '/v1/stats/routing',
]);

/** Paths with an id in them, as templates ({id} = one path segment). */
const TEMPLATES = ['/v1/files/{id}', '/v1/files/{id}/content', '/v1/batches/{id}', '/v1/batches/{id}/cancel'].map((template) => ({
  re: new RegExp(`^${template.replace(/\{id\}/g, '[^/]+')}$`),
  template,
}));

export function routeLabel(url: string | undefined): string {
  const p = routePath(url);
  if (p === null) return 'other';
  if (EXACT.has(p)) return p;
  return TEMPLATES.find((t) => t.re.test(p))?.template ?? 'other';
}
