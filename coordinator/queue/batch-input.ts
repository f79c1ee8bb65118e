// A Batch API input file: JSONL, one {custom_id, method, url, body} per line. Checked twice,
// as OpenAI does: at upload only that it is JSONL within the limits (a 400 naming the line);
// when a batch is created, each line's fields and the uniqueness of custom_ids (a batch
// with any bad line fails validation, listing the lines). A body's own fields are checked
// when its request runs: a bad one is that request's 400 in the batch's error file.
import { badRequest, quoteValue } from '../api/errors';
import type { Endpoint } from '../api/schemas';
import type { FileLimits } from './files-store';

export const BATCH_ENDPOINTS: Record<string, Endpoint> = { '/v1/completions': 'completions', '/v1/chat/completions': 'chat.completions' };

/** A client value for a message: a quoted string, or its kind (never a deep structure's text). */
export function shown(v: unknown): string {
  if (typeof v === 'string') return quoteValue(v);
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : String(v).slice(0, 40);
}

export interface BatchRequestLine {
  /** 1-based line number in the file. */
  line: number;
  custom_id: string;
  body: Record<string, unknown>;
}

/** OpenAI's batch error entry (the batch object's errors.data). */
export interface BatchLineError {
  code: string;
  message: string;
  param: string | null;
  line: number | null;
}

/** At most this many errors are listed on a failed batch (the first ones). */
export const MAX_LISTED_ERRORS = 100;

/** The non-empty lines with their 1-based numbers. */
function lines(text: string): { line: number; text: string }[] {
  const out: { line: number; text: string }[] = [];
  text.split('\n').forEach((t, i) => {
    if (t.trim() !== '') out.push({ line: i + 1, text: t });
  });
  return out;
}

/** The upload check: UTF-8 JSONL of objects within the limits; a 400 naming the first problem. */
export function checkUpload(content: Buffer, limits: FileLimits): void {
  if (content.length > limits.maxBytes) {
    throw badRequest(`file: ${content.length} bytes is over the limit of ${limits.maxBytes} (the server's --max-file-mb): split it into several batches`, 'file', 'file_too_large');
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(content);
  } catch {
    throw badRequest('file: not UTF-8 text; a batch file is JSONL, one JSON request per line', 'file', 'invalid_file');
  }
  const ls = lines(text);
  if (ls.length === 0) throw badRequest('file: no requests; a batch file is JSONL, one {"custom_id", "method", "url", "body"} per line', 'file', 'empty_file');
  if (ls.length > limits.maxLines) {
    throw badRequest(`file: ${ls.length} requests is over the limit of ${limits.maxLines} (the server's --max-file-lines): split it into several batches`, 'file', 'too_many_requests');
  }
  for (const l of ls) {
    let v: unknown;
    try {
      v = JSON.parse(l.text);
    } catch (e) {
      throw badRequest(`file line ${l.line}: not valid JSON (${(e as Error).message})`, 'file', 'invalid_json_line');
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) {
      throw badRequest(`file line ${l.line}: expected a JSON object {"custom_id", "method", "url", "body"}`, 'file', 'invalid_json_line');
    }
  }
}

/** The validation of a batch's input against its endpoint: its requests, or why it fails. */
export function parseBatchInput(content: Buffer, endpoint: string): { requests: BatchRequestLine[]; errors: BatchLineError[] } {
  const requests: BatchRequestLine[] = [];
  const errors: BatchLineError[] = [];
  const seen = new Map<string, number>();
  const fail = (line: number | null, code: string, param: string | null, message: string) => {
    if (errors.length < MAX_LISTED_ERRORS) errors.push({ code, message, param, line });
  };
  for (const l of lines(content.toString('utf8'))) {
    let v: unknown;
    try {
      v = JSON.parse(l.text);
    } catch {
      fail(l.line, 'invalid_json_line', null, 'This line is not parseable as valid JSON.');
      continue;
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) {
      fail(l.line, 'invalid_json_line', null, 'This line is not a JSON object.');
      continue;
    }
    const o = v as Record<string, unknown>;
    if (typeof o.custom_id !== 'string' || o.custom_id === '') {
      fail(l.line, 'missing_required_parameter', 'custom_id', 'custom_id: expected a non-empty string naming the request.');
      continue;
    }
    if (o.method !== 'POST') {
      fail(l.line, 'invalid_method', 'method', `method: expected "POST", got ${shown(o.method)}.`);
      continue;
    }
    if (o.url !== endpoint) {
      fail(l.line, 'mismatched_endpoint', 'url', `url: expected ${JSON.stringify(endpoint)} (the batch's endpoint), got ${shown(o.url)}.`);
      continue;
    }
    if (typeof o.body !== 'object' || o.body === null || Array.isArray(o.body)) {
      fail(l.line, 'missing_required_parameter', 'body', 'body: expected the request body, a JSON object.');
      continue;
    }
    const first = seen.get(o.custom_id);
    if (first !== undefined) {
      fail(l.line, 'duplicate_custom_id', 'custom_id', `custom_id ${shown(o.custom_id)} is also on line ${first}: each request needs its own.`);
      continue;
    }
    seen.set(o.custom_id, l.line);
    requests.push({ line: l.line, custom_id: o.custom_id, body: o.body as Record<string, unknown> });
  }
  if (requests.length === 0 && errors.length === 0) fail(null, 'empty_file', null, 'The input file has no requests.');
  return { requests, errors };
}
