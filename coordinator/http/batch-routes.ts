// The OpenAI Files and Batch API routes (`serve --redis`), as one extra route of the HTTP
// server (its `routes` option; the API key is checked before any /v1/ route):
//
//   POST /v1/files                 multipart form: purpose=batch, file=JSONL   -> file object
//   GET  /v1/files/{id}            file object;  GET /v1/files/{id}/content  -> the bytes
//   GET  /v1/files[?purpose&limit&after&order], DELETE /v1/files/{id}
//   POST /v1/batches               {input_file_id, endpoint, completion_window, metadata}
//   GET  /v1/batches[?after&limit] newest first; GET /v1/batches/{id}; POST /v1/batches/{id}/cancel
//
// Every failure is an OpenAI error object (guard.ts); bodies are read with a bound.
import type http from 'node:http';
import { ApiError, badRequest, methodNotAllowed } from '../api/errors';
import { checkUpload } from '../queue/batch-input';
import type { BatchService } from '../queue/batches';
import { fileNotFound, type FileStore } from '../queue/files-store';
import { guarded } from './guard';
import { readBody, readJson, sendJson } from './server';

export interface BatchRoutesOptions {
  batches: BatchService;
  files: FileStore;
}

/** Room for the multipart framing and the purpose field around the largest file. */
const MULTIPART_SLACK = 64 * 1024;
/** A POST /v1/batches body is small. */
const JSON_LIMIT = 1 << 20;

export type Route = (req: http.IncomingMessage, res: http.ServerResponse, pathname: string) => boolean;

export function batchRoutes(opts: BatchRoutesOptions): Route {
  const { batches, files } = opts;

  async function handle(req: http.IncomingMessage, res: http.ServerResponse, path: string): Promise<void> {
    const method = req.method ?? 'GET';
    const parts = path.split('/').slice(3); // '', 'v1', 'files'|'batches', ...
    const resource = path.split('/')[2];
    const only = (m: string) => {
      if (method !== m) throw methodNotAllowed(method, path);
    };
    if (resource === 'files') {
      if (parts.length === 0) {
        if (method === 'POST') return sendJson(res, 200, await upload(req, files));
        only('GET');
        return sendJson(res, 200, await listFiles(req, files));
      }
      const file = await files.get(parts[0]);
      if (!file) throw fileNotFound(parts[0]);
      if (parts.length === 1) {
        if (method === 'DELETE') {
          await files.delete(file.id);
          return sendJson(res, 200, { id: file.id, object: 'file', deleted: true });
        }
        only('GET');
        return sendJson(res, 200, file);
      }
      if (parts.length === 2 && parts[1] === 'content') {
        only('GET');
        const content = (await files.content(file.id)) ?? Buffer.alloc(0);
        res.writeHead(200, {
          'content-type': 'application/octet-stream',
          'content-length': content.length,
          'content-disposition': `attachment; filename="${file.filename.replace(/[^\w.-]/g, '_')}"`,
        });
        res.end(content);
        return;
      }
    } else {
      if (parts.length === 0) {
        if (method === 'POST') return sendJson(res, 200, await batches.create(await readJson(req, JSON_LIMIT, 'a batch request is a small JSON object')));
        only('GET');
        const q = new URL(req.url ?? '/', 'http://localhost').searchParams;
        return sendJson(res, 200, await batches.list(q.get('after'), q.get('limit')));
      }
      if (parts.length === 1) {
        only('GET');
        return sendJson(res, 200, await batches.retrieve(parts[0]));
      }
      if (parts.length === 2 && parts[1] === 'cancel') {
        only('POST');
        return sendJson(res, 200, await batches.cancel(parts[0]));
      }
    }
    throw new ApiError(404, `no route ${method} ${path}`, 'invalid_request_error', null, 'not_found');
  }

  return (req, res, pathname) => {
    if (!/^\/v1\/(files|batches)(\/|$)/.test(pathname)) return false;
    guarded((rq, rs) => handle(rq, rs, pathname).catch((e: unknown) => Promise.reject(redisDown(e) ?? e)))(req, res);
    return true;
  };
}

/** GET /v1/files[?purpose&limit&after&order]: OpenAI's list object. */
async function listFiles(req: http.IncomingMessage, files: FileStore): Promise<object> {
  const q = new URL(req.url ?? '/', 'http://localhost').searchParams;
  const limitText = q.get('limit');
  const limit = limitText === null ? 10_000 : Number(limitText);
  if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) throw badRequest(`limit: expected an integer from 1 to 10000, got ${JSON.stringify(String(limitText).slice(0, 40))}`, 'limit');
  const order = q.get('order') ?? 'desc';
  if (order !== 'asc' && order !== 'desc') throw badRequest(`order: expected "asc" or "desc", got ${JSON.stringify(order.slice(0, 40))}`, 'order');
  const { data, hasMore } = await files.list({ after: q.get('after'), limit, order, purpose: q.get('purpose') });
  return { object: 'list', data, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null, has_more: hasMore };
}

/** Redis not answering (ioredis's timeout, closed connection, retries used up) is a 503 to retry, not a 500. */
function redisDown(e: unknown): ApiError | null {
  if (!(e instanceof Error) || e instanceof ApiError) return null;
  const down = e.name === 'MaxRetriesPerRequestError' || /^(Command timed out|Connection is closed|Stream isn't writeable)/.test(e.message);
  return down ? new ApiError(503, `the batch store (Redis) is not answering (${e.message}); retry shortly`, 'service_unavailable', null, 'redis_unavailable') : null;
}

/** POST /v1/files: the multipart form the openai client sends (fields purpose and file). */
async function upload(req: http.IncomingMessage, files: FileStore): Promise<object> {
  const type = req.headers['content-type'] ?? '';
  if (!/^multipart\/form-data\s*;/i.test(type)) {
    throw badRequest('send the file as multipart/form-data with fields "purpose" (batch) and "file" (the JSONL file)', 'file');
  }
  const body = await readBody(req, files.limits.maxBytes + MULTIPART_SLACK, `a batch file is at most ${files.limits.maxBytes} bytes (the server's --max-file-mb)`);
  let form: FormData;
  try {
    form = await new Request('http://localhost/', { method: 'POST', headers: { 'content-type': type }, body }).formData();
  } catch (e) {
    throw badRequest(`the multipart body cannot be parsed (${(e as Error).message}): send fields "purpose" and "file" as multipart/form-data`, 'file');
  }
  const purpose = form.get('purpose');
  if (purpose !== 'batch') {
    throw badRequest(`purpose: expected "batch" (the only purpose this server stores files for), got ${JSON.stringify(typeof purpose === 'string' ? purpose.slice(0, 80) : purpose === null ? null : 'a file')}`, 'purpose');
  }
  const file = form.get('file');
  if (file === null || typeof file === 'string') throw badRequest('file: this field is required (a JSONL file part with a filename)', 'file');
  const content = Buffer.from(await file.arrayBuffer());
  checkUpload(content, files.limits);
  return files.create((file.name || 'upload.jsonl').slice(0, 255), 'batch', content);
}
