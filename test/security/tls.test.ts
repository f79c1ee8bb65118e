// mTLS between coordinators/workers and expert nodes, on loopback, with
// certificates this test makes with openssl: a real `expert-node` process
// with --tls-cert/--tls-key/--tls-ca and --health-port serves a client that
// presents a certificate of its CA (same outputs as local experts), refuses a
// client without a certificate, one whose certificate another CA signed, and
// plaintext; the plaintext health port answers without a certificate. Each TLS
// mistake fails RemoteExperts.connect within seconds (not after its 120 s
// connect timeout) with one line naming the cause, and the node logs each
// refused connection, at most once per peer address per 10 s.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { parseExpertSpec } from '../../core/expert-spec';
import { ModelFolder } from '../../core/model-folder';
import { native, type NativeBackend } from '../../core/native';
import { isLoopbackAddress, loadTlsFiles } from '../../core/tls-files';
import { EXPERT_SERVICE_NAME } from '../../core/wire/expert-proto';
import { RUN_SOCKET_ALPN, RUN_SOCKET_MAGIC } from '../../core/wire/run-frames';
import { type ChannelFactory, ExpertClient, insecureChannel, tlsChannel } from '../../coordinator/expert-client';
import { LocalExperts } from '../../coordinator/local-experts';
import { createRemoteExperts } from '../../coordinator/remote-factory';
import type { RemoteExperts } from '../../coordinator/remote-experts';
import { engineOptionsFrom } from '../../cli/engine-flags';
import { ExpertStore } from '../../expert-node/expert-store';
import { runExpertNode } from '../../expert-node/main';
import { createServer } from '../../expert-node/server';
import { describeGolden, TINY_A_MODEL } from '../helpers/golden';
import { maxAbsDiff, randomBatch, sourceNodeCommand } from '../cluster/helpers';
import { haveOpenssl, makeTestCerts, type TestCerts } from './certs';

const describeTls = haveOpenssl ? describeGolden : (name: string, fn: () => void) => {
  // eslint-disable-next-line no-console
  console.warn(`skipping "${name}": openssl not found`);
  describe.skip(name, fn);
};

/** A plaintext health Check of `service` at `address`. */
function checkHealth(address: string, service = ''): Promise<string> {
  const Client = grpc.makeGenericClientConstructor(healthService, 'Health');
  const client = new Client(address, grpc.credentials.createInsecure());
  return new Promise((resolve, reject) => {
    client.check({ service }, { deadline: Date.now() + 5000 }, (err: grpc.ServiceError | null, res: { status: string }) => {
      client.close();
      if (err) reject(err);
      else resolve(res.status);
    });
  });
}

/** A shard map with one node at `address`, in `dir`. */
function shardMap(dir: string, address: string, spec = '*'): string {
  const file = path.join(fs.mkdtempSync(path.join(dir, 'map-')), 'shard-map.yaml');
  fs.writeFileSync(file, `nodes:\n  - address: ${address}\n    experts: "${spec}"\n`);
  return file;
}

/** How the coordinator's connect (engine flags -> RemoteExperts.connect, default timeouts) fails, and how fast. */
async function connectFailure(folder: ModelFolder, mapFile: string, tls: { tlsCert?: string; tlsKey?: string; tlsCa?: string }):
  Promise<{ error: Error; ms: number }> {
  const opts = engineOptionsFrom({ model: TINY_A_MODEL, experts: mapFile, device: 'cpu', threads: 1, weights: 'auto', ...tls });
  const t0 = Date.now();
  try {
    const remote = await opts.remoteExperts!({ kind: 'file', path: mapFile }, folder, () => undefined);
    await remote.close();
  } catch (e) {
    return { error: e as Error, ms: Date.now() - t0 };
  }
  throw new Error('connected, but a failure was expected');
}

/** "Within a few seconds" on a loaded machine; the connect timeout these replace is 120 s. */
const FAST_MS = 15_000;

/** What a client with this channel gets from the node: 'SERVING', or the refusal. */
async function tryClient(address: string, factory: ChannelFactory): Promise<string> {
  const client = new ExpertClient(address, factory);
  try {
    return await client.health(3000);
  } catch (e) {
    return (e as Error).message;
  } finally {
    client.close();
  }
}

describeTls('mTLS between coordinator and expert nodes (tiny-a, loopback)', () => {
  let certs: TestCerts;
  let folder: ModelFolder;
  let node: ChildProcess;
  let port: number;
  let healthPort: number;
  let startedAt: number;
  const nodeLog: string[] = [];
  const spec = '0-1:0-3';

  beforeAll(async () => {
    certs = makeTestCerts();
    folder = await ModelFolder.open(TINY_A_MODEL);
    startedAt = Date.now();
    const [exe, ...args] = sourceNodeCommand();
    node = spawn(exe, [...args, '--model', TINY_A_MODEL, '--experts', spec, '--port', '0', '--health-port', '0',
      '--device', 'cpu', '--threads', '1', '--tls-cert', certs.serverCert, '--tls-key', certs.serverKey, '--tls-ca', certs.ca],
    { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
    node.stderr!.setEncoding('utf8').on('data', (d: string) => nodeLog.push(d));
    await new Promise<void>((resolve, reject) => {
      node.on('message', (m: { event: string; port?: number; healthPort?: number; message?: string }) => {
        if (m.event === 'listening') {
          port = m.port!;
          healthPort = m.healthPort!;
        } else if (m.event === 'serving') resolve();
        else if (m.event === 'failed') reject(new Error(m.message));
      });
      node.on('exit', (code) => reject(new Error(`expert-node exited (${code}): ${nodeLog.join('')}`)));
    });
  });

  afterAll(async () => {
    if (node && node.exitCode === null) {
      const exited = new Promise((resolve) => node.once('exit', resolve));
      node.kill('SIGTERM');
      await exited;
    }
    await folder?.close();
    certs?.remove();
  });

  test('the node says it runs mTLS and serves health in plaintext on its own port', () => {
    const log = nodeLog.join('');
    expect(log).toContain(`mTLS, clients verified against ${certs.ca}`);
    expect(log).toContain(`gRPC health (plaintext) on 127.0.0.1:${healthPort}`);
    expect(log).not.toContain('warning');
    expect(healthPort).not.toBe(port);
  });

  test('a client with a certificate of the CA: runExperts through the engine flags equals local experts', async () => {
    const dir = fs.mkdtempSync(path.join(certs.dir, 'map-'));
    const mapFile = path.join(dir, 'shard-map.yaml');
    fs.writeFileSync(mapFile, `nodes:\n  - address: localhost:${port}\n    experts: "${spec}"\n`);
    const opts = engineOptionsFrom({ model: TINY_A_MODEL, experts: mapFile, device: 'cpu', threads: 1, weights: 'auto',
      tlsCert: certs.clientCert, tlsKey: certs.clientKey, tlsCa: certs.ca });
    const lines: string[] = [];
    expect(opts.experts).toEqual({ kind: 'file', path: mapFile });
    const remote = await opts.remoteExperts!({ kind: 'file', path: mapFile }, folder, (l) => lines.push(l));
    // Run's calls take the run socket, over the same mTLS.
    expect((remote as RemoteExperts).nodeList().map((n) => n.transport)).toEqual(['socket']);
    const backend: NativeBackend = native().createBackend('cpu', 1);
    let local: LocalExperts | undefined;
    try {
      local = await LocalExperts.load(folder, backend, { store: 'auto', mode: 'sparse' });
      for (const [layer, rows, seed] of [[0, 3, 1], [1, 9, 2]]) {
        const b = randomBatch(folder.config, layer, rows, seed);
        const want = await local.runExperts(b);
        const got = await remote.runExperts(b, { stepId: seed });
        expect(maxAbsDiff(got.out, want.out)).toBeLessThanOrEqual(1e-6);
        expect(got.active).toEqual(want.active);
      }
    } finally {
      await remote.close();
      await local?.close();
      backend.close();
    }
    expect(lines.join('\n')).not.toContain('plaintext');
  });

  test('the server is verified too: its IP address works, a client trusting another CA refuses it', async () => {
    const good = loadTlsFiles({ tlsCert: certs.clientCert, tlsKey: certs.clientKey, tlsCa: certs.ca }, 'client')!;
    expect(await tryClient(`127.0.0.1:${port}`, tlsChannel(good))).toBe('SERVING');
    const wrongTrust = loadTlsFiles({ tlsCert: certs.clientCert, tlsKey: certs.clientKey, tlsCa: certs.otherCa }, 'client')!;
    expect(await tryClient(`localhost:${port}`, tlsChannel(wrongTrust))).toMatch(/UNAVAILABLE/);
    // What RemoteExperts.connect reports names the TLS cause, at once, not "not reachable" at the deadline.
    const client = new ExpertClient(`localhost:${port}`, tlsChannel(wrongTrust));
    try {
      await expect(client.waitForReady(60_000)).rejects.toThrow(`expert node localhost:${port}: unknown CA: the node's certificate is ` +
        'not signed by the CA in the coordinator\'s --tls-ca (self-signed certificate in certificate chain); give the coordinator --tls-ca');
    } finally {
      client.close();
    }
  });

  test.each([
    ['a plaintext coordinator', () => ({}), 'TLS required: the node speaks TLS, but the coordinator connects in plaintext; give the coordinator --tls-ca'],
    ['no client certificate', () => ({ tlsCa: certs.ca }),
      'certificate required: the node requires a client certificate and the coordinator presented none; give the coordinator --tls-cert and --tls-key'],
    ['a client certificate of another CA', () => ({ tlsCert: certs.otherClientCert, tlsKey: certs.otherClientKey, tlsCa: certs.ca }),
      'unknown CA: the node refused the coordinator\'s client certificate; give the coordinator a --tls-cert signed by the CA in the node\'s --tls-ca'],
    ['a coordinator trusting another CA', () => ({ tlsCert: certs.clientCert, tlsKey: certs.clientKey, tlsCa: certs.otherCa }),
      'unknown CA: the node\'s certificate is not signed by the CA in the coordinator\'s --tls-ca'],
  ])('%s: connect fails within seconds with one line naming the address, the cause and the flag', async (_what, flags, cause) => {
    const { error, ms } = await connectFailure(folder, shardMap(certs.dir, `localhost:${port}`, spec), flags());
    expect(error.name).toBe('UserError');
    expect(error.message).toContain(`expert node localhost:${port}: ${cause}`);
    expect(error.message).not.toContain('\n');
    expect(ms).toBeLessThan(FAST_MS);
  });

  test('the node logged refused connections naming the peer and the cause, at most one per peer address per 10 s', () => {
    const refused = nodeLog.join('').split('\n').filter((l) => l.includes('refused a TLS connection'));
    expect(refused.length).toBeGreaterThanOrEqual(1);
    for (const line of refused) {
      expect(line).toMatch(/^expert-node: refused a TLS connection from 127\.0\.0\.1:\d+: (not TLS|certificate required|unknown CA|the client closed)/);
    }
    // Every client above came from 127.0.0.1 and retried; dozens of refused handshakes in all.
    expect(refused.length).toBeLessThanOrEqual(Math.ceil((Date.now() - startedAt) / 10_000) + 1);
  });

  test('refused: no client certificate, a certificate of another CA, plaintext', async () => {
    const address = `localhost:${port}`;
    const noCert = loadTlsFiles({ tlsCa: certs.ca }, 'client')!;
    const otherCa = loadTlsFiles({ tlsCert: certs.otherClientCert, tlsKey: certs.otherClientKey, tlsCa: certs.ca }, 'client')!;
    for (const factory of [tlsChannel(noCert), tlsChannel(otherCa), insecureChannel]) {
      expect(await tryClient(address, factory)).toMatch(/UNAVAILABLE/);
    }
    // Nothing of the service either, not only health.
    const client = new ExpertClient(address, tlsChannel(otherCa));
    try {
      await expect(client.info(3000)).rejects.toThrow(/UNAVAILABLE/);
    } finally {
      client.close();
    }
  });

  test('the plaintext health port answers SERVING without a certificate, and offers nothing else', async () => {
    const address = `127.0.0.1:${healthPort}`;
    expect(await checkHealth(address)).toBe('SERVING');
    expect(await checkHealth(address, EXPERT_SERVICE_NAME)).toBe('SERVING');
    const client = new ExpertClient(address, insecureChannel);
    try {
      await expect(client.info(3000)).rejects.toThrow(/UNIMPLEMENTED/);
    } finally {
      client.close();
    }
  });

  /** A raw connection sends the run socket's magic: what came back, and whether the node closed it within 5 s. */
  function rawMagic(connect: () => net.Socket): Promise<{ received: Buffer; closed: boolean; alpn?: string | false | null }> {
    return new Promise((resolve) => {
      const socket = connect();
      const chunks: Buffer[] = [];
      let alpn: string | false | null | undefined;
      const done = (closed: boolean) => {
        clearTimeout(timer);
        socket.destroy();
        resolve({ received: Buffer.concat(chunks), closed, alpn });
      };
      const timer = setTimeout(() => done(false), 5000);
      socket.on('secureConnect', () => (alpn = (socket as tls.TLSSocket).alpnProtocol));
      socket.on('data', (c: Buffer) => {
        chunks.push(c);
        if (Buffer.concat(chunks).length >= RUN_SOCKET_MAGIC.length) done(false);
      });
      socket.on('error', () => undefined);
      socket.on('close', () => done(true));
      socket.write(RUN_SOCKET_MAGIC);
    });
  }

  test('the run socket under mTLS: ALPN turbosparse-run/1 with a client certificate is answered; without one, or in plaintext, nothing is', async () => {
    const viaTls = (withCert: boolean) => () => tls.connect({ host: '127.0.0.1', port, ca: fs.readFileSync(certs.ca), ALPNProtocols: [RUN_SOCKET_ALPN],
      ...(withCert ? { cert: fs.readFileSync(certs.clientCert), key: fs.readFileSync(certs.clientKey) } : {}) });
    const good = await rawMagic(viaTls(true));
    expect(good.alpn).toBe(RUN_SOCKET_ALPN);
    expect(good.received).toEqual(RUN_SOCKET_MAGIC);
    // No client certificate: the handshake may complete (TLS 1.3), but the node closes without answering.
    const noCert = await rawMagic(viaTls(false));
    expect(noCert.closed).toBe(true);
    expect(noCert.received.length).toBe(0);
    // The magic in plaintext to the TLS port: not TLS, no answer.
    const plain = await rawMagic(() => net.connect(port, '127.0.0.1'));
    expect(plain.closed).toBe(true);
    expect(plain.received.includes(RUN_SOCKET_MAGIC)).toBe(false);
  });
});

describeTls('TLS mistakes against in-process nodes', () => {
  let certs: TestCerts;
  let folder: ModelFolder;
  beforeAll(async () => {
    certs = makeTestCerts();
    folder = await ModelFolder.open(TINY_A_MODEL);
  });
  afterAll(async () => {
    await folder?.close();
    certs?.remove();
  });

  const good = () => ({ tlsCert: certs.clientCert, tlsKey: certs.clientKey, tlsCa: certs.ca });

  test('a TLS coordinator against a plaintext node: "not TLS", within seconds', async () => {
    const server = createServer();
    try {
      const port = await server.listen('127.0.0.1', 0);
      const { error, ms } = await connectFailure(folder, shardMap(certs.dir, `localhost:${port}`), good());
      expect(error.message).toBe(`expert node localhost:${port}: not TLS: the node speaks plaintext, but the coordinator connects with TLS; ` +
        'start the node with --tls-cert, --tls-key and --tls-ca, or give the coordinator no --tls-* flags');
      expect(ms).toBeLessThan(FAST_MS);
    } finally {
      server.forceShutdown();
    }
  });

  test('a TLS mistake on one node is reported within seconds even while another node of the map is unreachable', async () => {
    const server = createServer();
    const closed = net.createServer();
    try {
      const port = await server.listen('127.0.0.1', 0);
      // A port nothing listens on: that node alone would be waited for until the 120 s connect timeout.
      const deadPort = await new Promise<number>((r) => closed.listen(0, '127.0.0.1', () => r((closed.address() as net.AddressInfo).port)));
      await new Promise((r) => closed.close(r));
      const file = path.join(fs.mkdtempSync(path.join(certs.dir, 'map-')), 'shard-map.yaml');
      fs.writeFileSync(file, `nodes:\n  - address: localhost:${port}\n    experts: "*"\n  - address: localhost:${deadPort}\n    experts: "*"\n`);
      const { error, ms } = await connectFailure(folder, file, good());
      expect(error.message).toContain(`expert node localhost:${port}: not TLS`);
      expect(ms).toBeLessThan(FAST_MS);
    } finally {
      server.forceShutdown();
    }
  });

  test('a node certificate that does not name the shard map\'s host: "name mismatch", within seconds', async () => {
    const tls = loadTlsFiles({ tlsCert: certs.wrongNameCert, tlsKey: certs.wrongNameKey, tlsCa: certs.ca }, 'server')!;
    const lines: string[] = [];
    const server = createServer({ tls: { cert: tls.cert!, key: tls.key!, ca: tls.ca }, log: (l) => lines.push(l) });
    try {
      const port = await server.listen('127.0.0.1', 0);
      const { error, ms } = await connectFailure(folder, shardMap(certs.dir, `localhost:${port}`), good());
      expect(error.message).toBe(`expert node localhost:${port}: name mismatch: the node's certificate does not name "localhost" ` +
        '(it names DNS:wrong.example); put an address it names in the shard map, or reissue the node\'s --tls-cert with "localhost" in its subjectAltName');
      expect(ms).toBeLessThan(FAST_MS);
      // The node sees a client that gave up during the handshake (the line may come just after the client's error).
      for (let i = 0; i < 50 && lines.length === 0; i++) await new Promise((r) => setTimeout(r, 100));
      expect(lines[0]).toMatch(/^refused a TLS connection from 127\.0\.0\.1:\d+: the client closed the connection during the handshake/);
    } finally {
      server.forceShutdown();
    }
  });

  test.each([
    ['plaintext', () => insecureChannel, /^refused a TLS connection from 127\.0\.0\.1:\d+: not TLS: the client spoke plaintext \(give the coordinator --tls-cert, --tls-key and --tls-ca\)$/],
    ['no client certificate', () => tlsChannel(loadTlsFiles({ tlsCa: certs.ca }, 'client')!),
      /^refused a TLS connection from 127\.0\.0\.1:\d+: certificate required: the client presented no certificate/],
    ['a client certificate of another CA',
      () => tlsChannel(loadTlsFiles({ tlsCert: certs.otherClientCert, tlsKey: certs.otherClientKey, tlsCa: certs.ca }, 'client')!),
      /^refused a TLS connection from 127\.0\.0\.1:\d+: unknown CA: the client's certificate is not signed by this node's --tls-ca \(.*certificate "other-client" issued by "other-ca"\)$/],
  ])('the node logs a refused %s connection once however often the client retries', async (_what, factory, line) => {
    const tls = loadTlsFiles({ tlsCert: certs.serverCert, tlsKey: certs.serverKey, tlsCa: certs.ca }, 'server')!;
    const lines: string[] = [];
    const server = createServer({ tls: { cert: tls.cert!, key: tls.key!, ca: tls.ca }, log: (l) => lines.push(l) });
    try {
      const port = await server.listen('127.0.0.1', 0);
      for (let i = 0; i < 4; i++) expect(await tryClient(`localhost:${port}`, factory())).toMatch(/UNAVAILABLE/);
      const refused = lines.filter((l) => l.startsWith('refused'));
      expect(refused).toHaveLength(1);
      expect(refused[0]).toMatch(line);
    } finally {
      server.forceShutdown();
    }
  });
});

describeTls('health port statuses (in process)', () => {
  test('NOT_SERVING while weights load, SERVING once loaded, NOT_SERVING while draining', async () => {
    const folder = await ModelFolder.open(TINY_A_MODEL);
    const backend = native().createBackend('cpu', 1);
    const server = createServer();
    try {
      await server.listen('127.0.0.1', 0);
      const address = `127.0.0.1:${await server.listenHealth('127.0.0.1', 0)}`;
      expect(await checkHealth(address)).toBe('NOT_SERVING');
      const store = await ExpertStore.load({ source: folder, dims: folder.config, pairs: parseExpertSpec('0:0', folder.config), backend, weights: 'auto' });
      server.setStore(store);
      expect(await checkHealth(address, EXPERT_SERVICE_NAME)).toBe('SERVING');
      // A probe watching the port sees the drain start before the port closes.
      const Client = grpc.makeGenericClientConstructor(healthService, 'Health');
      const watcher = new Client(address, grpc.credentials.createInsecure());
      const seen: string[] = [];
      const call = watcher.watch({ service: '' });
      const drained = new Promise<void>((resolve) => {
        call.on('data', (r: { status: string }) => {
          seen.push(r.status);
          if (r.status === 'NOT_SERVING') resolve();
        });
        call.on('error', () => resolve());
      });
      await new Promise<void>((resolve) => call.once('data', () => resolve()));
      await server.shutdown(2000);
      await drained;
      watcher.close();
      store.close();
      expect(seen).toEqual(['SERVING', 'NOT_SERVING']);
    } finally {
      server.forceShutdown();
      backend.close();
      await folder.close();
    }
  });
});

describeTls('TLS flags: errors and warnings', () => {
  let certs: TestCerts;
  beforeAll(() => {
    certs = makeTestCerts();
  });
  afterAll(() => certs?.remove());

  test('a missing or wrong file is one UserError line naming the flag and the file', () => {
    const missing = path.join(certs.dir, 'nope.crt');
    const cases: [Parameters<typeof loadTlsFiles>[0], 'server' | 'client', string][] = [
      [{ tlsCert: missing, tlsKey: certs.clientKey }, 'client', `--tls-cert ${missing}: cannot read it (no such file)`],
      [{ tlsCa: missing }, 'client', `--tls-ca ${missing}: cannot read it (no such file)`],
      [{ tlsCert: certs.serverCert, tlsKey: certs.serverKey, tlsCa: certs.serverKey }, 'server', `--tls-ca ${certs.serverKey}: not a PEM CA certificate`],
      [{ tlsCert: certs.serverCert, tlsKey: certs.clientKey }, 'server', `--tls-key ${certs.clientKey} is not the private key of --tls-cert ${certs.serverCert}`],
      [{ tlsCert: certs.clientCert }, 'client', `--tls-cert ${certs.clientCert} needs --tls-key FILE`],
      [{ tlsCa: certs.ca }, 'server', `--tls-ca ${certs.ca} needs --tls-cert FILE and --tls-key FILE`],
    ];
    for (const [flags, role, message] of cases) {
      let err: Error | undefined;
      try {
        loadTlsFiles(flags, role);
      } catch (e) {
        err = e as Error;
      }
      expect(err?.name).toBe('UserError');
      expect(err?.message).toContain(message);
      expect(err?.message).not.toContain('\n');
    }
    expect(loadTlsFiles({}, 'server')).toBeUndefined();
    // The client side fails on the flags, before any model is opened.
    expect(() => engineOptionsFrom({ model: '/nowhere', experts: 'local', device: 'cpu', threads: 1, weights: 'auto', tlsCa: missing }))
      .toThrow(`--tls-ca ${missing}: cannot read it (no such file)`);
  });

  test('expert-node with a missing certificate exits 2 with one line on stderr', () => {
    const [exe, ...args] = sourceNodeCommand();
    const missing = path.join(certs.dir, 'missing.key');
    const r = spawnSync(exe, [...args, '--model', TINY_A_MODEL, '--experts', '0:0', '--port', '0', '--device', 'cpu',
      '--tls-cert', certs.serverCert, '--tls-key', missing, '--tls-ca', certs.ca], { encoding: 'utf8', timeout: 60_000 });
    expect(r.stderr).toBe(`error: --tls-key ${missing}: cannot read it (no such file)\n`);
    expect(r.status).toBe(2);
  });

  test('an expert node on a non-loopback address warns without TLS or without --tls-ca; not with mTLS', async () => {
    const base = { model: TINY_A_MODEL, experts: '0:0', port: 0, device: 'cpu' as const, threads: 1, weights: 'auto' as const, graceMs: 100 };
    const runs: [Partial<Parameters<typeof runExpertNode>[0]>, RegExp | null][] = [
      [{ host: '0.0.0.0' }, /^warning: plaintext gRPC on 0\.0\.0\.0:\d+, not loopback: .*give --tls-cert, --tls-key and --tls-ca for mTLS$/],
      [{ host: '0.0.0.0', tlsCert: certs.serverCert, tlsKey: certs.serverKey }, /^warning: TLS without --tls-ca on 0\.0\.0\.0:\d+, not loopback: any client may call this node/],
      [{ host: '0.0.0.0', tlsCert: certs.serverCert, tlsKey: certs.serverKey, tlsCa: certs.ca }, null],
      [{ host: '127.0.0.1' }, null],
    ];
    for (const [extra, warning] of runs) {
      const lines: string[] = [];
      const node = await runExpertNode({ ...base, host: '127.0.0.1', ...extra, log: (l) => lines.push(l) });
      await node.stop();
      const warnings = lines.filter((l) => l.startsWith('warning'));
      if (warning) {
        expect(warnings).toHaveLength(1);
        expect(warnings[0]).toMatch(warning);
      } else {
        expect(warnings).toEqual([]);
      }
    }
  });

  test('plaintext to a shard map address that is not loopback logs a warning', async () => {
    expect(['127.0.0.1:1', 'localhost:5', '[::1]:7', '127.3.2.1:9'].every(isLoopbackAddress)).toBe(true);
    expect(['10.0.0.5:50051', 'turbosparse-expert-0.turbosparse-expert:50051', '[2001:db8::1]:1', '0.0.0.0:1'].some(isLoopbackAddress)).toBe(false);
    const folder = await ModelFolder.open(TINY_A_MODEL);
    const mapFile = path.join(certs.dir, 'remote-map.yaml');
    // 192.0.2.0/24 is TEST-NET-1: never routed, so the connect fails (quickly, by its timeout).
    fs.writeFileSync(mapFile, 'nodes:\n  - address: 192.0.2.1:50051\n    experts: "*"\n');
    const lines: string[] = [];
    try {
      await expect(createRemoteExperts({ kind: 'file', path: mapFile }, folder, (l) => lines.push(l), { connectTimeoutMs: 300 }))
        .rejects.toThrow();
    } finally {
      await folder.close();
    }
    expect(lines[0]).toMatch(/^warning: plaintext gRPC to 1 expert node\(s\) not on loopback \(192\.0\.2\.1:50051\).*--tls-cert, --tls-key and --tls-ca/);
  });
});
