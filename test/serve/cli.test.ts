// `turbosparse serve` as a process: binds the port it is given (0 = free), answers
// the official client, exits cleanly on SIGTERM.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { makeDemoModel } from '../../core/demo-model';
import { waitFor } from './helpers';

const ROOT = path.resolve(__dirname, '..', '..');
const DEMO = { layers: 2, hidden: 64, intermediate: 128, heads: 4, kvHeads: 2, experts: 4, topK: 2, vocab: 300, predictorRank: 16, shards: 1 };

test('serve --port 0 --api-key: OpenAI client works, bad key is 401, SIGTERM lets a stream finish and exits 0', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-serve-cli-'));
  await makeDemoModel(dir, DEMO);
  const entry = `require(${JSON.stringify(path.join(ROOT, 'cli', 'main.ts'))}).main(['node', 'turbosparse', ...process.argv.slice(1)])`;
  const child = spawn(
    process.execPath,
    ['-r', path.join(ROOT, 'test', 'cluster', 'ts-register-cached.js'), '-e', entry,
      'serve', '--model', dir, '--port', '0', '--api-key', 'k1', '--device', 'cpu', '--threads', '1', '--served-model-name', 'demo',
      '--grace-period', '20'],
    { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  const exited = new Promise<number | null>((r) => child.on('exit', r));
  try {
    await waitFor(() => /serving demo at (http:\/\/\S+)\/v1/.test(err) || child.exitCode !== null, 60000, 'the server to listen');
    const url = /serving demo at (http:\/\/\S+)\/v1/.exec(err)?.[1];
    expect(url).toBeDefined();
    const client = new OpenAI({ apiKey: 'k1', baseURL: `${url}/v1`, maxRetries: 0 });
    const r = await client.chat.completions.create({ model: 'demo', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 });
    expect(r.choices[0].message.role).toBe('assistant');
    const bad = new OpenAI({ apiKey: 'k2', baseURL: `${url}/v1`, maxRetries: 0 });
    await expect(bad.models.list()).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
    expect((await fetch(`${url}/ready`)).status).toBe(200);
    expect(await (await fetch(`${url}/metrics`)).text()).toMatch(/turbosparse_scheduler_running_sequences/);
    // SIGTERM in the middle of a stream: it still gets every token, then the process exits.
    const stream = await client.completions.create({ model: 'demo', prompt: [1, 5, 6], max_tokens: 400, stream: true, ignore_eos: true } as OpenAI.CompletionCreateParamsStreaming);
    let text = '';
    let finish: string | null = null;
    let signalled = false;
    for await (const chunk of stream) {
      if (!signalled) {
        child.kill('SIGTERM');
        signalled = true;
      }
      text += chunk.choices[0]?.text ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    expect(finish).toBe('length');
    expect(text.length).toBeGreaterThan(0);
    expect(await exited).toBe(0);
    expect(err).toMatch(/SIGTERM: no new requests/);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
}, 90000);
