// The expert protocol's messages as protobufjs objects, built the plain way: the reference the byte
// codec (core/wire/expert-request-bytes.ts, expert-response-bytes.ts) must match bit for bit, and a
// way for tests to send what another client of proto/expert.proto would.
import type { ExpertGroup, RoutedBatch } from '../../core/routed-batch';
import { routeCount } from '../../core/routed-batch';
import type { DecodedRequest, RequestOptions } from '../../core/wire/expert-messages';
import type { ExpertRequest, ExpertResponse } from '../../core/wire/expert-proto';
import { encodeMask } from '../../core/wire/masks';
import { encodeRows, toProtoEncoding } from '../../core/wire/rows';

/**
 * One node's message for `groups` (whole groups of `batch`): each routed row's
 * hidden state once (ascending batch row), then the routes in group order.
 * `rows` are the batch rows of the message's hidden rows, in order.
 */
export function encodeExpertRequest(batch: RoutedBatch, groups: readonly ExpertGroup[], o: RequestOptions):
  { request: Omit<ExpertRequest, 'id'>; rows: Int32Array } {
  const R = batch.maskRowBytes;
  const local = new Int32Array(batch.nRows).fill(-1);
  for (const g of groups) for (const r of g.rows) local[r] = 0;
  let n = 0;
  for (let r = 0; r < batch.nRows; r++) if (local[r] === 0) local[r] = n++;
  const rows = new Int32Array(n);
  for (let r = 0; r < batch.nRows; r++) if (local[r] >= 0) rows[local[r]] = r;
  const routes = [];
  for (const g of groups) {
    for (let j = 0; j < g.rows.length; j++) {
      routes.push({ row: local[g.rows[j]], expert: g.expert, weight: g.weights[j],
        mask: encodeMask(g.masks.subarray(j * R, (j + 1) * R), o.intermediateSize) });
    }
  }
  const request = {
    stepId: o.stepId,
    layer: batch.layer,
    hidden: encodeRows(batch.hidden, o.hiddenSize, rows, o.wire),
    routes,
    replyEncoding: toProtoEncoding(o.wire),
    timeoutMs: o.timeoutMs,
    traceContext: o.traceContext,
  };
  return { request, rows };
}

/** A node's answer for a decoded request: active counts back in the request's route order. */
export function encodeExpertResponse(id: number, decoded: DecodedRequest, out: Float32Array, active: Int32Array, hiddenSize: number,
  timing: { queueUs: number; computeUs: number }): ExpertResponse {
  const { routeOrder } = decoded;
  const perRoute = routeOrder ? Array.from(routeOrder, (g) => active[g]) : Array.from(active);
  if (perRoute.length !== routeCount(decoded.batch.groups)) throw new Error('encodeExpertResponse: active counts do not match the routes');
  return { id, out: encodeRows(out, hiddenSize, null, decoded.reply), active: perRoute, queueUs: timing.queueUs, computeUs: timing.computeUs };
}
