// A request listener that cannot take the process down: whatever it throws, synchronously
// or as a rejected promise, becomes an error response for that request only (or, once the
// response has started, the end of that connection). Node would otherwise crash on the
// exception or the unhandled rejection, ending every other request with it.
import type http from 'node:http';
import { toApiError, type ApiError } from '../api/errors';

type Listener = (req: http.IncomingMessage, res: http.ServerResponse) => unknown;

export interface GuardOptions {
  /** The error response for a failure (default: toApiError, unknown errors are 500s). */
  toError?: (e: unknown) => ApiError | Promise<ApiError>;
  /** Told about every failure with the error it became (for logging 500s). */
  onError?: (req: http.IncomingMessage, e: unknown, err: ApiError) => void;
}

export function guarded(listener: Listener, opts: GuardOptions = {}): Listener {
  const fail = async (req: http.IncomingMessage, res: http.ServerResponse, e: unknown): Promise<void> => {
    const err = await (opts.toError ?? toApiError)(e);
    opts.onError?.(req, e, err);
    if (res.headersSent || res.destroyed) {
      res.destroy();
      return;
    }
    // Drain what is left of a body we refused so the client reads our answer.
    if (!req.complete) req.resume();
    const text = JSON.stringify(err.toJSON());
    res.writeHead(err.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  };
  const last = (res: http.ServerResponse) => () => res.destroy(); // even the error response failed
  return (req, res) => {
    try {
      const out = listener(req, res);
      if (out instanceof Promise) out.catch((e: unknown) => fail(req, res, e).catch(last(res)));
    } catch (e) {
      fail(req, res, e).catch(last(res));
    }
  };
}
