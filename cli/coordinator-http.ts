// A request from a CLI command (`stats`, `rebalance`) to a running coordinator's HTTP API: the --url
// checked, the API key sent, and a server that cannot be reached said in one line. What a status
// means is the caller's.
import { UserError } from '../core/errors';

export async function coordinatorFetch(base: string, rel: string, apiKey: string | undefined,
  init: { method?: 'GET' | 'POST'; body?: unknown; timeoutMs: number }): Promise<{ url: URL; res: Response }> {
  let root: URL;
  try {
    root = new URL(base.endsWith('/') ? base : `${base}/`);
  } catch {
    throw new UserError(`--url ${base} is not a URL; use e.g. http://127.0.0.1:8000`);
  }
  if (root.protocol !== 'http:' && root.protocol !== 'https:') throw new UserError(`--url ${base}: use an http:// or https:// URL`);
  const url = new URL(rel, root);
  try {
    const res = await fetch(url, {
      method: init.method ?? 'GET',
      headers: { ...(apiKey ? { authorization: `Bearer ${apiKey}` } : {}), ...(init.body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: init.body === undefined ? undefined : JSON.stringify(init.body),
      signal: AbortSignal.timeout(init.timeoutMs),
    });
    return { url, res };
  } catch (e) {
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    throw new UserError(`cannot reach ${url.href} (${cause?.code ?? cause?.message ?? (e as Error).message}): is \`turbosparse serve\` running there?`);
  }
}
