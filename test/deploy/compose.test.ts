// deploy/docker-compose.yml (one-machine trial) without a Docker engine: the services are
// wired to each other the way the processes expect, and the shard map the one-shot service
// writes names the expert services.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { parseShardMap } from '../../core/shard-map';
import { DEPLOY, parseArgs, readText } from './k8s-render';

/* eslint-disable @typescript-eslint/no-explicit-any */
const compose = YAML.parse(readText('deploy', 'docker-compose.yml'), { merge: true });
const services: Record<string, any> = compose.services;
const gpu = YAML.parse(readText('deploy', 'docker-compose.gpu.yml'), { merge: true });

/** Compose's ${VAR:-default} / ${VAR:?message} with no variables set (defaults apply). */
function interpolate(s: string): string {
  return s.replace(/\$\{(\w+)(?::-([^}]*)|:\?[^}]*)?\}/g, (_m, _name, dflt) => dflt ?? '');
}

const experts = Object.keys(services).filter((s) => /^turbosparse-expert-\d+$/.test(s)).sort();
const TURBOSPARSE = [...experts, 'turbosparse-coordinator', 'turbosparse-worker', 'shard-map'];

test('the trial runs a coordinator, two expert nodes, a worker, Redis and the collector', () => {
  expect(experts).toEqual(['turbosparse-expert-0', 'turbosparse-expert-1']);
  for (const s of ['turbosparse-coordinator', 'turbosparse-worker', 'turbosparse-redis', 'turbosparse-otel-collector', 'shard-map']) {
    expect(services[s]).toBeDefined();
  }
});

test('every image is pinned to an exact version', () => {
  for (const [name, svc] of Object.entries(services)) {
    const image = interpolate(svc.image);
    expect(`${name}: ${image}`).toMatch(/:\S*\d+\.\d+\.\d+[\w.-]*$/);
  }
});

test('turbosparse containers run as the image\'s non-root user on a read-only filesystem, weights mounted read-only', () => {
  for (const name of TURBOSPARSE) {
    const svc = services[name];
    expect(svc.user).toBe('10001:10001');
    expect(svc.read_only).toBe(true);
    expect(svc.cap_drop).toEqual(['ALL']);
    expect(svc.volumes).toContain('${TURBOSPARSE_MODEL:?set TURBOSPARSE_MODEL to a model folder}:/model:ro');
    expect(parseArgs(svc.command ?? []).flags.get('--api-key')).toBeUndefined();
  }
  // Only the one-shot may write the shard-map volume.
  for (const name of TURBOSPARSE) {
    const mount = services[name].volumes.find((v: string) => v.startsWith('shard-map:'));
    expect(`${name} ${mount}`).toMatch(name === 'shard-map' ? /:\/var\/lib\/turbosparse$/ : /:\/var\/lib\/turbosparse:ro$/);
  }
  expect(services['turbosparse-coordinator'].environment).toHaveProperty('TURBOSPARSE_API_KEY', null); // passed through, never a value
});

test('the shard map the one-shot writes has one entry per expert service, at that service\'s address and port', () => {
  const script: string = services['shard-map'].command.join(' ');
  const nodes = Number(/--nodes (\d+)/.exec(script)![1]);
  expect(nodes).toBe(experts.length);
  const out = /shard-map-addresses\.js (\S+) (\S+)/.exec(script)!;
  const nameTemplate = /--name '([^']+)'/.exec(script)![1];
  const addressTemplate = /--address '([^']+)'/.exec(script)![1];
  expect(script).toContain(`--out ${out[1]}`);
  // Run the address step on a generated-looking map and read it back with the coordinator's parser.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-compose-'));
  try {
    const generated = path.join(dir, 'generated.yaml');
    fs.writeFileSync(generated, YAML.stringify({ nodes: [
      { address: '127.0.0.1:40001', experts: '0-1:0-1' }, { address: '127.0.0.1:40002', experts: '0-1:2-3' }] }));
    const written = path.join(dir, 'shard-map.yaml');
    execFileSync(process.execPath, [path.join(DEPLOY, 'shard-map-addresses.js'), generated, written,
      '--name', nameTemplate, '--address', addressTemplate], { stdio: 'ignore' });
    const map = parseShardMap(fs.readFileSync(written, 'utf8'), written, { numLayers: 2, numExperts: 4 });
    map.nodes.forEach((node, i) => {
      const svc = services[experts[i]];
      const { flags } = parseArgs(svc.command);
      expect(node.name).toBe(experts[i]);
      expect(node.address).toBe(`${experts[i]}:${flags.get('--port')}`);
      expect(flags.get('--shard-index')).toBe(String(i));
      expect(flags.get('--shard-map')).toBe(out[2]);
    });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  for (const s of ['turbosparse-coordinator', 'turbosparse-worker']) {
    expect(parseArgs(services[s].command).flags.get('--experts')).toBe(out[2]);
  }
  for (const e of experts) expect(services[e].depends_on['shard-map'].condition).toBe('service_completed_successfully');
});

test('health: expert nodes on the plaintext health port, the coordinator on /ready; dependants wait for them', () => {
  for (const e of experts) {
    const { flags } = parseArgs(services[e].command);
    expect(services[e].healthcheck.test).toEqual(['CMD', 'node', '/app/deploy/grpc-health-probe.js', `127.0.0.1:${flags.get('--health-port')}`]);
    expect(services[e].healthcheck.start_period).toMatch(/m$/); // weight loading takes minutes
    // The collector scrapes every node through this shared name (as the headless Service in k8s).
    expect(services[e].networks.default.aliases).toContain('turbosparse-expert');
  }
  const coordinator = services['turbosparse-coordinator'];
  const port = parseArgs(coordinator.command).flags.get('--port');
  expect(coordinator.healthcheck.test.join(' ')).toContain(`http://127.0.0.1:${port}/ready`);
  expect(coordinator.ports).toContain(`127.0.0.1:${port}:${port}`);
  for (const dependant of ['turbosparse-coordinator', 'turbosparse-worker']) {
    for (const e of experts) expect(services[dependant].depends_on[e].condition).toBe('service_healthy');
  }
  expect(services['turbosparse-worker'].depends_on['turbosparse-redis'].condition).toBe('service_healthy');
});

test('the worker reaches Redis by its service name; Redis runs the shared redis.conf', () => {
  const url = new URL(parseArgs(services['turbosparse-worker'].command).flags.get('--redis')!);
  expect(services[url.hostname]).toBeDefined();
  const redis = services[url.hostname];
  const confMount = redis.volumes.find((v: string) => v.startsWith('./redis/redis.conf:'));
  expect(redis.command).toEqual(['redis-server', confMount.split(':')[1]]);
  expect(redis.volumes.some((v: string) => v.endsWith(':/data'))).toBe(true);
  expect(fs.existsSync(path.join(DEPLOY, 'redis', 'redis.conf'))).toBe(true);
});

test('telemetry: every turbosparse service exports to the collector, which runs deploy/otel-collector/config.yaml', () => {
  const collector = services['turbosparse-otel-collector'];
  expect(collector.volumes).toContain('./otel-collector/config.yaml:/etc/otelcol/config.yaml:ro');
  expect(collector.command).toEqual(['--config=/etc/otelcol/config.yaml']);
  const [host, port] = collector.environment.TRACES_OTLP_ENDPOINT.split(':');
  expect(services[host]).toBeDefined();
  expect(port).toBe('4317');
  const config = YAML.parse(readText('deploy', 'otel-collector', 'config.yaml'));
  expect(config.exporters['otlp/traces'].endpoint).toBe('${env:TRACES_OTLP_ENDPOINT}');
  const scrapes = config.receivers.prometheus.config.scrape_configs;
  // The collector's scrape targets are compose service names / aliases too.
  expect(scrapes.flatMap((s: any) => s.static_configs?.flatMap((c: any) => c.targets) ?? []))
    .toContain(`turbosparse-coordinator:${parseArgs(services['turbosparse-coordinator'].command).flags.get('--port')}`);
  // Every process with a metrics port is found through a DNS name: the expert nodes' shared alias,
  // the worker's service name (one address per container when scaled).
  const dns = (job: string) => scrapes.find((s: any) => s.job_name === job).dns_sd_configs[0];
  expect(dns('turbosparse-expert-node').names).toEqual(['turbosparse-expert']);
  expect(String(dns('turbosparse-expert-node').port)).toBe(parseArgs(services[experts[0]].command).flags.get('--metrics-port'));
  expect(dns('turbosparse-worker').names).toEqual(['turbosparse-worker']);
  const worker = parseArgs(services['turbosparse-worker'].command).flags;
  expect(String(dns('turbosparse-worker').port)).toBe(worker.get('--metrics-port'));
  expect(worker.get('--metrics-host')).toBe('0.0.0.0');
  const scraped = new Set(scrapes.flatMap((s: any) => s.dns_sd_configs?.flatMap((d: any) => d.names) ?? []));
  for (const [name, svc] of Object.entries(services)) {
    if (parseArgs(svc.command ?? []).flags.has('--metrics-port')) {
      expect(`${name} scraped: ${scraped.has(name) || (svc.networks?.default?.aliases ?? []).some((a: string) => scraped.has(a))}`)
        .toBe(`${name} scraped: true`);
    }
  }
  for (const name of experts.concat('turbosparse-coordinator', 'turbosparse-worker')) {
    const env = services[name].environment;
    expect(env.OTEL_EXPORTER_OTLP_ENDPOINT).toBe('http://turbosparse-otel-collector:4317');
    expect(env.OTEL_SERVICE_NAME).toMatch(/^turbosparse-(expert-node|coordinator|worker)$/);
  }
});

test('the GPU variant gives every turbosparse service the GPUs and switches image and device', () => {
  for (const name of [...experts, 'turbosparse-coordinator', 'turbosparse-worker']) {
    expect(gpu.services[name].deploy.resources.reservations.devices[0]).toEqual({ driver: 'nvidia', count: 'all', capabilities: ['gpu'] });
  }
  const env = Object.fromEntries(readText('deploy', 'gpu.env').split('\n').filter((l) => /^\w+=/.test(l)).map((l) => l.split('=')));
  expect(env).toEqual({ TURBOSPARSE_DOCKERFILE: 'deploy/Dockerfile.cuda', TURBOSPARSE_IMAGE: 'turbosparse:0.1.0-cuda', TURBOSPARSE_DEVICE: 'cuda' });
  expect(services['shard-map'].build.dockerfile).toBe('${TURBOSPARSE_DOCKERFILE:-deploy/Dockerfile.cpu}');
  for (const e of experts) expect(parseArgs(services[e].command).flags.get('--device')).toBe('${TURBOSPARSE_DEVICE:-cpu}');
  expect(fs.existsSync(path.join(DEPLOY, env.TURBOSPARSE_DOCKERFILE.replace(/^deploy\//, '')))).toBe(true);
});
