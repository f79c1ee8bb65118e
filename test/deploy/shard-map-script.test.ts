// k8s/scripts/shard-map.sh is how an operator scales expert nodes or rolls a new model: it runs
// `turbosparse shard-map`, renames the entries to the StatefulSet's pods, and sets the replica
// count and model dimensions in the overlay. Run it on a copy of k8s/ and check the result.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { parseShardMap } from '../../core/shard-map';
import { K8S, ROOT, find, findKubectl, render } from './k8s-render';
import { testUnless } from '../helpers/skip';

const SCRIPT = path.join(K8S, 'scripts', 'shard-map.sh');
const GOLDEN_MODEL = path.resolve(ROOT, '..', 'shared', 'golden', 'tiny-a', 'model');

/**
 * Stands in for `turbosparse shard-map` (the script only needs its output file): every pair of
 * the model's config.json on `--replicas` consecutive nodes, addressed as a local cluster would be.
 */
const FAKE_CLI = `
const fs = require('node:fs');
const args = process.argv.slice(2);
const get = (f, d) => (args.includes(f) ? args[args.indexOf(f) + 1] : d);
if (args[0] !== 'shard-map') process.exit(3);
const config = JSON.parse(fs.readFileSync(get('--model') + '/config.json', 'utf8'));
const n = Number(get('--nodes')), r = Number(get('--replicas', '1'));
const nodes = Array.from({ length: n }, (_, i) => ({ address: '127.0.0.1:' + (40000 + i), experts: [] }));
let k = 0;
for (let l = 0; l < config.num_hidden_layers; l++)
  for (let e = 0; e < config.num_local_experts; e++, k++)
    for (let c = 0; c < r; c++) nodes[(k + c) % n].experts.push(l + ':' + e);
fs.writeFileSync(get('--out'), JSON.stringify({ nodes: nodes.map((x) => ({ ...x, experts: x.experts.join(',') })) }));
`;

describe('k8s/scripts/shard-map.sh', () => {
  let dir: string;
  let overlay: string;
  let model: string;
  let env: NodeJS.ProcessEnv;

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-shardmap-'));
    fs.cpSync(K8S, path.join(dir, 'k8s'), { recursive: true });
    overlay = path.join(dir, 'k8s', 'overlays', 'gpu');
    model = path.join(dir, 'tiny-model');
    fs.mkdirSync(model);
    fs.writeFileSync(path.join(model, 'config.json'), JSON.stringify({
      num_hidden_layers: 3, num_local_experts: 4, hidden_size: 64, intermediate_size: 160 }));
    fs.writeFileSync(path.join(dir, 'fake-cli.js'), FAKE_CLI);
    env = { ...process.env, TURBOSPARSE: `${process.execPath} ${path.join(dir, 'fake-cli.js')}` };
  });

  afterEach(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('writes the map with pod names and addresses, and sets replicas and model dims in the overlay', () => {
    execFileSync('bash', [SCRIPT, overlay, '--model', model, '--nodes', '3', '--replicas', '2'], { env, stdio: 'pipe' });
    const map = parseShardMap(fs.readFileSync(path.join(overlay, 'shard-map.yaml'), 'utf8'), 'shard-map.yaml',
      { numLayers: 3, numExperts: 4 }); // validates coverage
    expect(map.nodes.map((n) => [n.name, n.address])).toEqual([0, 1, 2].map((i) =>
      [`turbosparse-expert-${i}`, `turbosparse-expert-${i}.turbosparse-expert:50051`]));
    // Replicas were kept: every pair on two nodes.
    const count = new Map<string, number>();
    for (const n of map.nodes) for (const p of n.experts) count.set(`${p.layer}:${p.expert}`, (count.get(`${p.layer}:${p.expert}`) ?? 0) + 1);
    expect([...count.values()].every((c) => c === 2)).toBe(true);

    const text = fs.readFileSync(path.join(overlay, 'kustomization.yaml'), 'utf8');
    const k = YAML.parse(text);
    expect(k.replicas).toEqual([{ name: 'turbosparse-expert', count: 3 }]);
    const gen = k.configMapGenerator.find((g: { name: string }) => g.name === 'turbosparse-shard-map');
    expect(gen.literals).toEqual(['model-layers=3', 'model-experts=4', 'model-hidden=64', 'model-intermediate=160']);
    expect(gen.files).toEqual(['shard-map.yaml']);
    expect(gen.behavior).toBe('replace');
    // The rest of the overlay and its comments are untouched.
    expect(text).toContain('# Point this at your registry');
    expect(k.patches).toHaveLength(3);
  });

  const kubectl = findKubectl();
  testUnless(kubectl ? null : 'kubectl not found on PATH (or $KUBECTL)')('the regenerated overlay renders: one shard per pod, new map, new ConfigMap name (pods roll)', () => {
    const before = find(render(kubectl!, overlay), 'ConfigMap', 'turbosparse-shard-map').metadata!.name;
    execFileSync('bash', [SCRIPT, overlay, '--model', model, '--nodes', '5'], { env, stdio: 'pipe' });
    const objects = render(kubectl!, overlay);
    const cm = find(objects, 'ConfigMap', 'turbosparse-shard-map') as unknown as { metadata: { name: string }; data: Record<string, string> };
    expect(cm.metadata.name).not.toBe(before);
    expect((find(objects, 'StatefulSet', 'turbosparse-expert').spec as { replicas: number }).replicas).toBe(5);
    expect(parseShardMap(cm.data['shard-map.yaml'], 'rendered', { numLayers: 3, numExperts: 4 }).nodes).toHaveLength(5);
    expect(cm.data['model-layers']).toBe('3');
  });

  test('a missing model folder or option is a one-line usage error and changes nothing', () => {
    const original = fs.readFileSync(path.join(overlay, 'kustomization.yaml'), 'utf8');
    for (const args of [[overlay, '--model', path.join(dir, 'nope'), '--nodes', '2'], [overlay, '--nodes', '2'], [path.join(dir, 'nowhere')]]) {
      let failure: { status: number; stderr: Buffer } | undefined;
      try {
        execFileSync('bash', [SCRIPT, ...args], { env, stdio: 'pipe' });
      } catch (e) {
        failure = e as { status: number; stderr: Buffer };
      }
      expect(failure?.status).toBe(2);
      expect(String(failure?.stderr).trim().split('\n')).toHaveLength(1);
    }
    expect(fs.readFileSync(path.join(overlay, 'kustomization.yaml'), 'utf8')).toBe(original);
  });

  // Built and registered: an unknown subcommand's --help prints the top-level usage instead.
  const realCli = fs.existsSync(path.join(ROOT, 'dist', 'cli', 'main.js')) && (() => {
    try {
      return execFileSync(process.execPath, [path.join(ROOT, 'bin', 'turbosparse.js'), 'shard-map', '--help'],
        { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).includes('Usage: turbosparse shard-map');
    } catch {
      return false;
    }
  })();
  const withRealCli = testUnless(!realCli ? '`turbosparse shard-map` is not built yet (npm run build)'
    : !fs.existsSync(GOLDEN_MODEL) ? `${GOLDEN_MODEL} is absent` : null);

  withRealCli('with the real `turbosparse shard-map` on the golden tiny model', () => {
    const realEnv = { ...process.env, TURBOSPARSE: `${process.execPath} ${path.join(ROOT, 'bin', 'turbosparse.js')}` };
    execFileSync('bash', [SCRIPT, overlay, '--model', GOLDEN_MODEL, '--nodes', '3', '--replicas', '2'], { env: realEnv, stdio: 'pipe' });
    const config = JSON.parse(fs.readFileSync(path.join(GOLDEN_MODEL, 'config.json'), 'utf8'));
    const map = parseShardMap(fs.readFileSync(path.join(overlay, 'shard-map.yaml'), 'utf8'), 'shard-map.yaml',
      { numLayers: config.num_hidden_layers, numExperts: config.num_local_experts });
    expect(map.nodes.map((n) => n.address)).toEqual([0, 1, 2].map((i) => `turbosparse-expert-${i}.turbosparse-expert:50051`));
    expect(YAML.parse(fs.readFileSync(path.join(overlay, 'kustomization.yaml'), 'utf8')).replicas[0].count).toBe(3);
  });
});
