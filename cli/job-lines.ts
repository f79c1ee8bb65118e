// JSONL files of generation requests, one job per line: `batch submit FILE` and `profile --prompts FILE`.
// Each command keeps its own wording (how it names the file, what it expected); the reading, the
// line numbers and the one-line UserError naming file:line are shared here.
import fs from 'node:fs';
import { UserError } from '../core/errors';
import type { JobData } from '../coordinator/queue/job';

export interface JobLine {
  /** `file:line`, 1-based, as every error about the line names it. */
  where: string;
  data: JobData;
}

/** A command's words for what can go wrong with the whole file or a line. */
export interface JobLinesWording {
  /** The file could not be read; `reason` is the errno code (ENOENT) or the error's message. */
  cannotRead(reason: string): string;
  /** A line is not JSON; `reason` is JSON.parse's message. */
  notJson(where: string, reason: string): string;
  /** The file holds no line but blank ones. */
  noLines: string;
  /** A command's own check of a parsed line before it becomes a job: the error's message, else undefined. */
  check?(value: unknown, where: string): string | undefined;
}

/** Every non-blank line of `file` as a job (jobDataFrom: a request body, with "endpoint", or an OpenAI Batch line). */
export async function readJobLines(file: string, wording: JobLinesWording): Promise<JobLine[]> {
  const { jobDataFrom } = await import('../coordinator/queue/job');
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new UserError(wording.cannotRead((e as NodeJS.ErrnoException).code ?? (e as Error).message));
  }
  const out: JobLine[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    const where = `${file}:${i + 1}`;
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch (e) {
      throw new UserError(wording.notJson(where, (e as Error).message));
    }
    const bad = wording.check?.(v, where);
    if (bad !== undefined) throw new UserError(bad);
    out.push({ where, data: jobDataFrom(v, where) });
  });
  if (out.length === 0) throw new UserError(wording.noLines);
  return out;
}
