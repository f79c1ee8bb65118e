// Admin routes of the coordinator's HTTP server (under /v1/, so the server asks
// for the API key first when there is one):
//
//   POST /v1/admin/rebalance  {routing?: routing.json, dry_run?: bool, replicas?: int}
//        -> 200 the plan (moves, predicted per-layer times before/after); unless
//           dry_run the moves run in the background. 409 while one runs.
//   GET  /v1/admin/rebalance  -> the rebalance status (state, moves with phases)
//   503 when a node is unhealthy or its Info does not answer (nothing moved).
//
// Errors are OpenAI-style error objects with one-line messages; a bad body is a 400.
import type http from 'node:http';
import { z } from 'zod';
import { UserError } from '../../core/errors';
import { parseRoutingStats } from '../../core/placement/routing-stats';
import { ApiError, methodNotAllowed, toApiError } from '../api/errors';
import { RebalanceBusyError, type Rebalancer, RebalanceUnavailableError } from '../rebalancer';
import { readBody } from './server';

export const REBALANCE_PATH = '/v1/admin/rebalance';

/** A routing.json fits easily (a few hundred bytes per pair). */
const MAX_BODY_BYTES = 16 * 2 ** 20;

const bodySchema = z.strictObject({
  routing: z.record(z.string(), z.unknown()).optional(),
  dry_run: z.boolean().optional(),
  replicas: z.number().int().min(1).max(64).optional(),
});

export type AdminRoute = (req: http.IncomingMessage, res: http.ServerResponse, pathname: string) => boolean;

/** The admin routes; `rebalancer` undefined (in-process experts) answers 400 saying why. */
export function adminRoutes(rebalancer: Rebalancer | undefined, log: (line: string) => void = () => undefined): AdminRoute {
  return (req, res, pathname) => {
    if (pathname !== REBALANCE_PATH) return false;
    handleRebalance(rebalancer, req, res).catch(async (e: unknown) => {
      const err = e instanceof ApiError ? e : e instanceof UserError ? new ApiError(400, e.message) : toApiError(e);
      if (err.status >= 500) log(`${req.method} ${pathname} failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
      if (res.headersSent || res.destroyed) return void res.destroy();
      if (!req.complete) req.resume();
      send(res, err.status, err.toJSON());
    });
    return true;
  };
}

async function handleRebalance(rebalancer: Rebalancer | undefined, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const method = req.method ?? 'GET';
  if (method !== 'GET' && method !== 'POST') throw methodNotAllowed(method, REBALANCE_PATH);
  if (!rebalancer) {
    throw new ApiError(400, 'rebalancing needs expert nodes: start serve with --experts cluster:N or a shard-map FILE', 'invalid_request_error',
      null, 'no_expert_nodes');
  }
  if (method === 'GET') return send(res, 200, rebalancer.status());
  const body = await readAdminBody(req);
  const parsed = bodySchema.safeParse(body);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue.path.length ? issue.path.join('.') : 'body';
    throw new ApiError(400, `${where}: ${issue.message} (expected {"routing"?: routing.json, "dry_run"?: true|false, "replicas"?: 1..64})`,
      'invalid_request_error', where);
  }
  const routing = parsed.data.routing === undefined ? undefined : parseRoutingStats(JSON.stringify(parsed.data.routing), 'body.routing');
  try {
    const plan = await rebalancer.start({ routing, dryRun: parsed.data.dry_run, replicas: parsed.data.replicas });
    send(res, 200, plan);
  } catch (e) {
    if (e instanceof RebalanceBusyError) throw new ApiError(409, e.message, 'invalid_request_error', null, 'rebalance_running');
    if (e instanceof RebalanceUnavailableError) throw new ApiError(503, e.message, 'service_unavailable', null, 'nodes_unavailable');
    throw e;
  }
}

/** The JSON body: 413 past the limit, 400 when not JSON (an empty body is {}: a default rebalance). */
async function readAdminBody(req: http.IncomingMessage): Promise<unknown> {
  const text = (await readBody(req, MAX_BODY_BYTES)).toString('utf8');
  if (text.trim() === '') return {};
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ApiError(400, `the request body is not valid JSON (${(e as Error).message})`, 'invalid_request_error');
  }
}

function send(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}
