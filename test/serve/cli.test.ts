// `turbosparse serve` as a process: binds the port it is given (0 = free), answers
// the official client, exits cleanly on SIGTERM.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { makeDemoModel } from '../../core/demo-model';
import { parseExpertSpec } from '../../core/expert-spec';
import { ModelFolder } from '../../core/model-folder';
import { startNode, type InProcessNode } from '../cluster/helpers';
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
  // 'close', not 'exit': stderr is read to the end (its SIGTERM line is checked after the exit)
  const exited = new Promise<number | null>((r) => child.on('close', r));
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
    // With a key, the metrics (node addresses, last errors) need it too.
    expect((await fetch(`${url}/metrics`)).status).toBe(401);
    expect(await (await fetch(`${url}/metrics`, { headers: { authorization: 'Bearer k1' } })).text()).toMatch(/turbosparse_scheduler_running_sequences/);
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
    await exited;
    fs.rmSync(dir, { recursive: true, force: true });
  }
}, 90000);

test('while the expert nodes are not up, serve answers /health 200 and /ready 503; then it serves on the same port', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-serve-loading-'));
  await makeDemoModel(dir, DEMO);
  const nodePort = await new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
  const mapFile = path.join(dir, 'shards.json');
  fs.writeFileSync(mapFile, JSON.stringify({ nodes: [{ address: `127.0.0.1:${nodePort}`, experts: '0-1:*' }] }));
  const entry = `require(${JSON.stringify(path.join(ROOT, 'cli', 'main.ts'))}).main(['node', 'turbosparse', ...process.argv.slice(1)])`;
  const child = spawn(
    process.execPath,
    ['-r', path.join(ROOT, 'test', 'cluster', 'ts-register-cached.js'), '-e', entry,
      'serve', '--model', dir, '--experts', mapFile, '--port', '0', '--device', 'cpu', '--threads', '1', '--served-model-name', 'demo'],
    { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  const exited = new Promise((r) => child.once('exit', r));
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  let node: InProcessNode | undefined;
  let folder: ModelFolder | undefined;
  try {
    await waitFor(() => /loading; (http:\/\/\S+)\/ready/.test(err) || child.exitCode !== null, 60000, 'the loading server');
    const url = /loading; (http:\/\/\S+)\/ready/.exec(err)?.[1];
    expect(url).toBeDefined();
    expect((await fetch(`${url}/health`)).status).toBe(200);
    const ready = await fetch(`${url}/ready`);
    expect(ready.status).toBe(503);
    expect(((await ready.json()) as { reason: string }).reason).toMatch(/loading/);
    const client = new OpenAI({ apiKey: 'x', baseURL: `${url}/v1`, maxRetries: 0 });
    await expect(client.completions.create({ model: 'demo', prompt: 'hi', max_tokens: 2 })).rejects.toMatchObject({ status: 503, code: 'loading' });
    // The node comes up: the coordinator connects and serves on the same port.
    folder = await ModelFolder.open(dir);
    node = await startNode(folder, parseExpertSpec('0-1:*', folder.config), { port: nodePort });
    await waitFor(() => /serving demo at /.test(err) || child.exitCode !== null, 60000, 'the server to serve');
    expect(err).toContain(`serving demo at ${url}/v1`);
    expect((await fetch(`${url}/ready`)).status).toBe(200);
    const r = await client.completions.create({ model: 'demo', prompt: 'hi', max_tokens: 2 });
    expect(r.choices[0].finish_reason).toBeDefined();
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    await exited;
    await node?.stop();
    await folder?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}, 90000);

test('a --port already in use is one line naming the flag, no stack trace', async () => {
  // A real model folder: serve checks the folder before it listens.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-serve-busy-'));
  await makeDemoModel(dir, DEMO);
  const busy = net.createServer();
  const port = await new Promise<number>((resolve) => busy.listen(0, '127.0.0.1', () => resolve((busy.address() as net.AddressInfo).port)));
  const entry = `require(${JSON.stringify(path.join(ROOT, 'cli', 'main.ts'))}).main(['node', 'turbosparse', ...process.argv.slice(1)])`;
  const child = spawn(process.execPath, ['-r', path.join(ROOT, 'test', 'cluster', 'ts-register-cached.js'), '-e', entry,
    'serve', '--model', dir, '--port', String(port)], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  try {
    const code = await new Promise<number | null>((r) => child.on('close', r));
    expect(code).not.toBe(0);
    expect(err).toMatch(new RegExp(`--port ${port}: cannot listen on 127\\.0\\.0\\.1:${port} \\(EADDRINUSE\\); pick another port`));
    expect(err).not.toMatch(/\n\s+at /);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    await new Promise((r) => busy.close(r));
    fs.rmSync(dir, { recursive: true, force: true });
  }
}, 60000);
