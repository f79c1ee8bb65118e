// k8s/scripts/make-secrets.sh makes the Secrets the manifests reference. Check them as
// Kubernetes objects, check the expert certificate names every shard-map address, and run a
// real mutual-TLS handshake on loopback with the certificates it made.
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { K8S, OUT_OF_BAND_SECRETS, parseYamlDocuments } from './k8s-render';
import { StrictKeyChecker, schemaErrors, type K8sObject } from './k8s-schema';
import { parseShardMap } from '../../core/shard-map';

const SCRIPT = path.join(K8S, 'scripts', 'make-secrets.sh');
const hasOpenssl = (() => {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();
if (!hasOpenssl) {
  // eslint-disable-next-line no-console
  console.warn('test/deploy/make-secrets: openssl not found; skipping');
}
const describeIfOpenssl = hasOpenssl ? describe : describe.skip;

/** Every shard map a user can deploy (the base and the overlays). */
function shardMapAddresses(): string[] {
  const files = ['base', 'overlays/cpu', 'overlays/gpu'].map((d) => path.join(K8S, d, 'shard-map.yaml'));
  return files.flatMap((f) => parseShardMap(fs.readFileSync(f, 'utf8'), f).nodes.map((n) => n.address));
}

type Attempt = 'ok' | string;

/** One TLS connection to `port`; 'ok' when the server accepted us and said so. */
function connect(port: number, opts: tls.ConnectionOptions): Promise<Attempt> {
  return new Promise((resolve) => {
    let settled = false;
    const done = (r: Attempt) => {
      if (!settled) {
        settled = true;
        resolve(r);
      }
    };
    const socket = tls.connect({ host: '127.0.0.1', port, ...opts });
    socket.setTimeout(5000, () => {
      done('timeout');
      socket.destroy();
    });
    socket.on('data', (d) => {
      done(d.toString() === 'ok' ? 'ok' : `unexpected ${d}`);
      socket.end();
    });
    socket.on('error', (e) => done(e.message));
    socket.on('close', () => done('closed without a reply'));
  });
}

describeIfOpenssl('k8s/scripts/make-secrets.sh', () => {
  let dir: string;
  let secrets: K8sObject[];
  const files: Record<string, Record<string, string>> = {};
  const MAX_NODES = 8;

  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-secrets-'));
    const out = execFileSync('bash', [SCRIPT, '--out', path.join(dir, 'out'), '--max-nodes', String(MAX_NODES)],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    secrets = parseYamlDocuments(out, 'make-secrets.sh output');
    for (const s of secrets) {
      files[s.metadata!.name!] = Object.fromEntries(Object.entries(s.data as Record<string, string>)
        .map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]));
    }
  });

  afterAll(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('prints exactly the Secrets the manifests reference, valid and strict', () => {
    const strict = new StrictKeyChecker([['v1', 'Secret']]);
    expect(secrets.flatMap((s) => [...schemaErrors(s), ...strict.unknownKeys(s)])).toEqual([]);
    expect(Object.fromEntries(secrets.map((s) => [s.metadata!.name!, Object.keys(s.data as object).sort()])))
      .toEqual(Object.fromEntries(Object.entries(OUT_OF_BAND_SECRETS).map(([k, v]) => [k, [...v].sort()])));
    for (const s of secrets) expect(s.metadata?.namespace).toBe('turbosparse');
    expect(files['turbosparse-api-key']['api-key']).toMatch(/^[0-9a-f]{64}$/);
  });

  test('keys stay private on disk', () => {
    const mode = fs.statSync(path.join(dir, 'out')).mode & 0o777;
    expect(mode).toBe(0o700);
    for (const f of ['ca.key', 'expert.key', 'client.key', 'api-key']) {
      expect(fs.statSync(path.join(dir, 'out', f)).mode & 0o077).toBe(0);
    }
  });

  test('both certificates chain to the CA in the Secret; server and client usages are separate', () => {
    const ca = new crypto.X509Certificate(files['turbosparse-expert-tls']['ca.crt']);
    expect(files['turbosparse-client-tls']['ca.crt']).toBe(files['turbosparse-expert-tls']['ca.crt']);
    for (const [name, usage] of [['turbosparse-expert-tls', '1.3.6.1.5.5.7.3.1'], ['turbosparse-client-tls', '1.3.6.1.5.5.7.3.2']]) {
      const cert = new crypto.X509Certificate(files[name]['tls.crt']);
      expect(cert.verify(ca.publicKey)).toBe(true);
      expect(cert.checkIssued(ca)).toBe(true);
      expect(cert.keyUsage).toEqual([usage]);
      expect(cert.checkPrivateKey(crypto.createPrivateKey(files[name]['tls.key']))).toBe(true);
    }
  });

  test('the expert certificate is valid for every address in the shipped shard maps, and nothing beyond --max-nodes', () => {
    const cert = new crypto.X509Certificate(files['turbosparse-expert-tls']['tls.crt']);
    const peer = { subject: { CN: 'turbosparse-expert' }, subjectaltname: cert.subjectAltName } as unknown as tls.PeerCertificate;
    const hosts = [...new Set(shardMapAddresses().map((a) => a.replace(/:\d+$/, '')))];
    expect(hosts.length).toBe(MAX_NODES); // the gpu overlay has 8 nodes
    for (const host of hosts) expect(tls.checkServerIdentity(host, peer)).toBeUndefined();
    expect(tls.checkServerIdentity('turbosparse-expert-3.turbosparse-expert.turbosparse.svc.cluster.local', peer)).toBeUndefined();
    expect(tls.checkServerIdentity(`turbosparse-expert-${MAX_NODES}.turbosparse-expert`, peer)?.message).toMatch(/altnames/);
    expect(tls.checkServerIdentity('turbosparse-coordinator', peer)?.message).toMatch(/altnames/);
  });

  test('mutual TLS on loopback: the client certificate is accepted, anything else is refused', async () => {
    const server = files['turbosparse-expert-tls'];
    const client = files['turbosparse-client-tls'];
    const listener = tls.createServer({ key: server['tls.key'], cert: server['tls.crt'], ca: server['ca.crt'],
      requestCert: true, rejectUnauthorized: true }, (socket) => socket.end('ok'));
    listener.on('tlsClientError', () => undefined);
    const port = await new Promise<number>((resolve) => listener.listen(0, '127.0.0.1', () => resolve((listener.address() as { port: number }).port)));
    try {
      const servername = 'turbosparse-expert-5.turbosparse-expert';
      expect(await connect(port, { servername, ca: client['ca.crt'], cert: client['tls.crt'], key: client['tls.key'] })).toBe('ok');
      // No client certificate.
      expect(await connect(port, { servername, ca: client['ca.crt'] })).toMatch(/certificate required|closed|reset/i);
      // The server's own certificate is not for client authentication.
      expect(await connect(port, { servername, ca: client['ca.crt'], cert: server['tls.crt'], key: server['tls.key'] }))
        .toMatch(/unsupported certificate|certificate|closed|reset/i);
      // A certificate from another CA.
      const other = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-secrets-other-'));
      try {
        execFileSync('bash', [SCRIPT, '--out', other, '--max-nodes', '1'], { stdio: 'ignore' });
        expect(await connect(port, { servername, ca: client['ca.crt'],
          cert: fs.readFileSync(path.join(other, 'client.crt')), key: fs.readFileSync(path.join(other, 'client.key')) }))
          .toMatch(/unknown ca|certificate|closed|reset/i);
      } finally {
        fs.rmSync(other, { recursive: true, force: true });
      }
      // The client refuses a server name the certificate does not carry.
      expect(await connect(port, { servername: 'evil.example', ca: client['ca.crt'], cert: client['tls.crt'], key: client['tls.key'] }))
        .toMatch(/altnames|Hostname/i);
    } finally {
      await new Promise<void>((resolve) => listener.close(() => resolve()));
    }
  });

  test('running it again keeps the CA and the API key, so peers stay valid', () => {
    const out = path.join(dir, 'out');
    const before = { ca: fs.readFileSync(path.join(out, 'ca.crt'), 'utf8'), key: fs.readFileSync(path.join(out, 'api-key'), 'utf8') };
    execFileSync('bash', [SCRIPT, '--out', out, '--max-nodes', '16'], { stdio: 'ignore' });
    expect(fs.readFileSync(path.join(out, 'ca.crt'), 'utf8')).toBe(before.ca);
    expect(fs.readFileSync(path.join(out, 'api-key'), 'utf8')).toBe(before.key);
    const cert = new crypto.X509Certificate(fs.readFileSync(path.join(out, 'expert.crt')));
    expect(cert.verify(new crypto.X509Certificate(before.ca).publicKey)).toBe(true);
    expect(cert.subjectAltName).toContain('DNS:turbosparse-expert-15.turbosparse-expert');
  });
});
