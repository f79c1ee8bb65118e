// The Files API's storage: a file's metadata always in Redis (every coordinator sees every
// file), its bytes in Redis or, with --files-dir, in a folder (which then must be shared by
// every coordinator, e.g. one volume). Batch input files come in through POST /v1/files;
// batch output and error files are written here by the batch finalizer.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Redis } from 'ioredis';
import { ApiError } from '../api/errors';

export type FilePurpose = 'batch' | 'batch_output';

/** OpenAI's file object. */
export interface FileObject {
  id: string;
  object: 'file';
  bytes: number;
  created_at: number;
  filename: string;
  purpose: FilePurpose;
  status: 'processed';
  status_details: null;
}

export interface FileLimits {
  /** Largest file accepted (bytes). */
  maxBytes: number;
  /** Most non-empty lines (requests) a batch input file may have. */
  maxLines: number;
}

/** 100 MB and 50k lines, OpenAI's own request limit (its byte limit is 200 MB). */
export const DEFAULT_FILE_LIMITS: FileLimits = { maxBytes: 100 * 2 ** 20, maxLines: 50_000 };

/** What file and batch ids may look like: nothing that could escape a key or a folder. */
export const ID_PATTERN = /^[A-Za-z0-9_-]{1,100}$/;

export function newFileId(): string {
  return `file-${randomBytes(12).toString('hex')}`;
}

export const fileNotFound = (id: string): ApiError =>
  new ApiError(404, `No such file: ${JSON.stringify(id.slice(0, 100))} (never uploaded here, or uploaded to another queue)`, 'invalid_request_error', 'file_id', 'file_not_found');

export interface FileStoreOptions {
  connection: Redis;
  /** Key prefix of this queue's Batch API (batches.ts's namespace). */
  namespace: string;
  /** Keep file bytes in this folder instead of Redis. */
  dir?: string;
  limits?: FileLimits;
}

export class FileStore {
  readonly limits: FileLimits;
  private readonly redis: Redis;
  private readonly ns: string;
  private readonly dir?: string;

  constructor(opts: FileStoreOptions) {
    this.redis = opts.connection;
    this.ns = opts.namespace;
    this.dir = opts.dir;
    this.limits = opts.limits ?? DEFAULT_FILE_LIMITS;
    if (this.dir) fs.mkdirSync(this.dir, { recursive: true });
  }

  private metaKey(id: string): string {
    return `${this.ns}:file:${id}`;
  }

  private contentKey(id: string): string {
    return `${this.ns}:file:${id}:content`;
  }

  /** Every file id by creation time (GET /v1/files). */
  private get indexKey(): string {
    return `${this.ns}:files`;
  }

  /**
   * Stores a file under `id` (a new one unless given). With a given id an existing file is
   * kept as it is: the batch finalizer writes its output under fixed ids, and a second
   * finalizer (another coordinator, a restart) must not change a file a client may be reading.
   */
  async create(filename: string, purpose: FilePurpose, content: Buffer, id = newFileId()): Promise<FileObject> {
    if (!ID_PATTERN.test(id)) throw new Error(`bad file id ${id}`);
    const existing = await this.get(id);
    if (existing) return existing;
    const file: FileObject = {
      id,
      object: 'file',
      bytes: content.length,
      created_at: Math.floor(Date.now() / 1000),
      filename,
      purpose,
      status: 'processed',
      status_details: null,
    };
    if (this.dir) {
      // Whole or not at all: a reader never sees half a file.
      const tmp = path.join(this.dir, `.${id}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
      await fs.promises.writeFile(tmp, content);
      await fs.promises.rename(tmp, path.join(this.dir, id));
    } else {
      await this.redis.set(this.contentKey(id), content);
    }
    // The metadata last: a file is there once its bytes are. NX: the first writer's object stays.
    if ((await this.redis.set(this.metaKey(id), JSON.stringify(file), 'NX')) === 'OK') await this.redis.zadd(this.indexKey, Date.now(), id);
    return (await this.get(id)) ?? file;
  }

  /** GET /v1/files: by creation time (`order` desc by default), after the id `after`, of one purpose if given. */
  async list(opts: { after: string | null; limit: number; order: 'asc' | 'desc'; purpose: string | null }): Promise<{ data: FileObject[]; hasMore: boolean }> {
    let start = 0;
    if (opts.after !== null) {
      const rank = opts.order === 'desc' ? await this.redis.zrevrank(this.indexKey, opts.after) : await this.redis.zrank(this.indexKey, opts.after);
      if (rank === null) throw new ApiError(400, `after: no such file ${JSON.stringify(opts.after.slice(0, 100))}`, 'invalid_request_error', 'after');
      start = rank + 1;
    }
    const data: FileObject[] = [];
    // Pages of ids until `limit` + 1 files of the purpose (one more: has_more) or the end.
    for (let page = 200; ; start += page) {
      const ids = opts.order === 'desc' ? await this.redis.zrevrange(this.indexKey, start, start + page - 1) : await this.redis.zrange(this.indexKey, String(start), String(start + page - 1));
      // A page's metadata in one round trip (a file deleted meanwhile reads as null).
      const metas = ids.length > 0 ? await this.redis.mget(ids.map((id) => this.metaKey(id))) : [];
      for (const text of metas) {
        const f = text ? (JSON.parse(text) as FileObject) : null;
        if (f && (opts.purpose === null || f.purpose === opts.purpose)) data.push(f);
        if (data.length > opts.limit) return { data: data.slice(0, opts.limit), hasMore: true };
      }
      if (ids.length < page) return { data, hasMore: false };
    }
  }

  /** DELETE /v1/files/{id}: false when there is no such file. */
  async delete(id: string): Promise<boolean> {
    if (!(await this.get(id))) return false;
    await this.redis.multi().del(this.metaKey(id)).del(this.contentKey(id)).zrem(this.indexKey, id).exec();
    if (this.dir) await fs.promises.rm(path.join(this.dir, id), { force: true });
    return true;
  }

  async get(id: string): Promise<FileObject | null> {
    if (!ID_PATTERN.test(id)) return null;
    const text = await this.redis.get(this.metaKey(id));
    return text ? (JSON.parse(text) as FileObject) : null;
  }

  /** The file's bytes, or null when there is no such file. */
  async content(id: string): Promise<Buffer | null> {
    if (!(await this.get(id))) return null;
    if (!this.dir) return this.redis.getBuffer(this.contentKey(id));
    try {
      return await fs.promises.readFile(path.join(this.dir, id));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new ApiError(500, `file ${id} is listed but not in --files-dir ${this.dir}: every coordinator must share that folder`, 'server_error', null, 'file_missing');
      }
      throw e;
    }
  }
}
