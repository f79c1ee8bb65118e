// The expert protocol at the message level, for both sides: what a request
// must hold and how it maps back to a RoutedBatch (decodeExpertRequest, every
// check and its error), the response's decoding, and the shared types. The call
// path writes and reads the same messages straight as bytes
// (expert-request-bytes.ts, expert-response-bytes.ts); anything unusual falls
// back to protobufjs objects and these functions. Routes travel in group order
// (expert ascending, each group's rows in order), so a node's `active` (per
// route, request order) is already the coordinator's group order.
import { status } from '@grpc/grpc-js';
import { pairKey } from '../expert-spec';
import type { ExpertGroup, RoutedBatch } from '../routed-batch';
import type { ExpertRequest__Output, ExpertResponse__Output } from './expert-proto';
import { decodeMaskInto } from './masks';
import { decodeRows, fromProtoEncoding, type WireEncoding } from './rows';

/** A request or response that is not what the protocol allows; `code` is the gRPC status to answer with. */
export class WireRejection extends Error {
  constructor(readonly code: status, message: string) {
    super(message);
    this.name = 'WireRejection';
  }
}

export interface RequestOptions {
  stepId: number;
  wire: WireEncoding;
  timeoutMs: number;
  traceContext: Record<string, string>;
  hiddenSize: number;
  intermediateSize: number;
}

/**
 * A node's answer: one pre-combined row per request row and an active count
 * per route. Throws WireRejection(INTERNAL) when it does not fit the request.
 */
export function decodeExpertResponse(res: ExpertResponse__Output, nRows: number, routes: number, hiddenSize: number):
  { out: Float32Array; active: Int32Array } {
  try {
    const out = decodeRows(res.out, nRows, hiddenSize, 'out');
    if (res.active.length !== routes) throw new Error(`${res.active.length} active counts for ${routes} routes`);
    return { out, active: Int32Array.from(res.active) };
  } catch (e) {
    throw new WireRejection(status.INTERNAL, `malformed response: ${(e as Error).message}`);
  }
}

/** What a node holds, for checking a request against it (an ExpertStore satisfies it). */
export interface HeldExperts {
  readonly dims: { hiddenSize: number; intermediateSize: number; numLayers: number; numExperts: number };
  readonly spec: string;
  holdsLayer(layer: number): boolean;
  expertsInLayer(layer: number): number;
  has(layer: number, expert: number): boolean;
}

export interface DecodedRequest {
  batch: RoutedBatch;
  reply: WireEncoding;
  /**
   * For each request route, its index in group order; null when the request was
   * already in group order (every request this codec encodes).
   */
  routeOrder: Int32Array | null;
}

/**
 * Validates a decoded ExpertRequest against what `held` holds and turns it into
 * a RoutedBatch. Throws WireRejection naming the field (INVALID_ARGUMENT for a
 * malformed request, FAILED_PRECONDITION for experts this node does not hold).
 */
export function decodeExpertRequest(req: ExpertRequest__Output, held: HeldExperts, maskRowBytes: number): DecodedRequest {
  const { numLayers, numExperts, hiddenSize: H, intermediateSize: I } = held.dims;
  const bad = (m: string) => new WireRejection(status.INVALID_ARGUMENT, m);
  const layer = req.layer;
  if (layer >= numLayers) throw bad(`layer ${layer} out of range: the model has ${numLayers} layers (0-${numLayers - 1})`);
  if (!held.holdsLayer(layer)) {
    throw new WireRejection(status.FAILED_PRECONDITION, `this node holds no expert of layer ${layer} (it holds ${held.spec}); check the shard map`);
  }
  if (!req.hidden) throw bad('hidden: missing');
  const nRows = req.hidden.count;
  if (nRows === 0) throw bad('hidden: no rows');
  let hidden: Float32Array;
  try {
    hidden = decodeRows(req.hidden, nRows, H, 'hidden', { finite: true });
  } catch (e) {
    throw bad((e as Error).message);
  }
  const reply = fromProtoEncoding(req.replyEncoding);
  const routes = req.routes;
  if (routes.length === 0) throw bad('routes: empty (each request needs at least one (row, expert) route)');
  // Before the masks are allocated (a mask row each): each row goes to each held expert at most once,
  // and the rows were checked against the bytes of `hidden`.
  const heldHere = held.expertsInLayer(layer);
  if (routes.length > nRows * heldHere) {
    throw bad(`routes: ${routes.length} routes for ${nRows} hidden rows, but a row goes at most ` +
      `once to each of the ${heldHere} experts of layer ${layer} this node holds (at most ${nRows * heldHere} routes)`);
  }
  // Pass 1: check every route, count routes per expert, note whether they already come in group order.
  const perExpert = new Map<number, number>();
  const seen = new Set<number>();
  let inOrder = true;
  let prevExpert = -1;
  for (let i = 0; i < routes.length; i++) {
    const r = routes[i];
    if (r.row >= nRows) throw bad(`routes[${i}].row ${r.row} out of range (the request has ${nRows} hidden rows)`);
    if (r.expert >= numExperts) throw bad(`routes[${i}].expert ${r.expert} out of range: the model has ${numExperts} experts per layer`);
    if (!held.has(layer, r.expert)) {
      throw new WireRejection(status.FAILED_PRECONDITION,
        `routes[${i}]: this node does not hold expert ${pairKey(layer, r.expert)} (it holds ${held.spec}); check the shard map`);
    }
    if (!Number.isFinite(r.weight)) throw bad(`routes[${i}].weight is ${r.weight}, not a finite number`);
    const key = r.row * numExperts + r.expert;
    if (seen.has(key)) throw bad(`routes[${i}]: row ${r.row} is routed to expert ${r.expert} twice`);
    seen.add(key);
    if (r.expert < prevExpert) inOrder = false;
    prevExpert = r.expert;
    perExpert.set(r.expert, (perExpert.get(r.expert) ?? 0) + 1);
  }
  // Pass 2: place each route in its expert's group (request order within a group), masks decoded in place.
  const experts = [...perExpert.keys()].sort((a, b) => a - b);
  const groupOf = new Map(experts.map((e, gi) => [e, gi]));
  const groups: ExpertGroup[] = experts.map((expert) => {
    const n = perExpert.get(expert)!;
    return { expert, rows: new Int32Array(n), weights: new Float32Array(n), masks: new Uint8Array(n * maskRowBytes) };
  });
  const starts = new Int32Array(groups.length);
  for (let gi = 1; gi < groups.length; gi++) starts[gi] = starts[gi - 1] + groups[gi - 1].rows.length;
  const filled = new Int32Array(groups.length);
  const routeOrder = inOrder ? null : new Int32Array(routes.length);
  for (let i = 0; i < routes.length; i++) {
    const r = routes[i];
    const gi = groupOf.get(r.expert)!;
    const g = groups[gi];
    const j = filled[gi]++;
    g.rows[j] = r.row;
    g.weights[j] = r.weight;
    try {
      decodeMaskInto(r.mask, I, g.masks, j * maskRowBytes, `routes[${i}].mask`);
    } catch (e) {
      throw bad((e as Error).message);
    }
    if (routeOrder) routeOrder[i] = starts[gi] + j;
  }
  return { batch: { layer, nRows, hidden, maskRowBytes, groups }, reply, routeOrder };
}
