// Renders k8s/base and every overlay with `kubectl kustomize`, validates each object against
// the Kubernetes schemas plus a strict unknown-key check, and asserts the facts the system
// needs to run: every expert pod gets a shard, the shard maps cover the model, probes and
// services point at ports the containers open, the coordinator and workers read the same
// shard map as the StatefulSet, NetworkPolicies select real pods, GPUs where they belong,
// memory sized from the shard.
import { balancedShardMap, expertBytes, parseShardMap, uniformPairs, type ShardMap } from '../../core/shard-map';
import {
  DEPLOY, K8S, KUSTOMIZATIONS, OUT_OF_BAND_SECRETS, bytesOf, container, find, findKubectl, parseArgs, podLabels, podSpec, readText, render,
  varRefs, workloads, type Container,
} from './k8s-render';
import { StrictKeyChecker, objectName, schemaErrors, type K8sObject } from './k8s-schema';
import { skippedTitle } from '../helpers/skip';
import path from 'node:path';
import fs from 'node:fs';
import YAML from 'yaml';

/* eslint-disable @typescript-eslint/no-explicit-any */

const kubectl = findKubectl();
// A real skip without kubectl, its reason in the title (the run's skip summary lists it).
const describeIfKubectl = kubectl ? describe : describe.skip;
const noKubectl = kubectl ? null : 'kubectl not found on PATH (or $KUBECTL)';

const NAMESPACE = 'turbosparse';
const EXPERT_STS = 'turbosparse-expert';
const EXPERT_CONTAINER = 'expert-node';
const MiB = 2 ** 20;
/** A node needs its weights plus room for buffers, the runtime and the CUDA context. */
const HEADROOM = 1.1;
const WEIGHT_DTYPES = ['bf16', 'f16', 'f32', 'i8'] as const;

function matches(selector: Record<string, string> | undefined, labels: Record<string, string>): boolean {
  return Object.entries(selector ?? {}).every(([k, v]) => labels[k] === v);
}

function selectorMatches(sel: { matchLabels?: Record<string, string>; matchExpressions?: unknown[] }, labels: Record<string, string>): boolean {
  if (sel.matchExpressions?.length) throw new Error('matchExpressions in a selector: extend the test');
  return matches(sel.matchLabels, labels);
}

/** Ports a container opens, by number and by name. */
function containerPorts(c: Container): { numbers: Set<number>; names: Map<string, number> } {
  const ports: any[] = c.ports ?? [];
  return {
    numbers: new Set(ports.map((p) => p.containerPort)),
    names: new Map(ports.filter((p) => p.name).map((p) => [p.name, p.containerPort])),
  };
}

function resolvePort(c: Container, port: number | string): number | undefined {
  const { numbers, names } = containerPorts(c);
  return typeof port === 'number' ? (numbers.has(port) ? port : undefined) : names.get(port);
}

function probePort(probe: any): number | string {
  return probe.grpc?.port ?? probe.httpGet?.port ?? probe.tcpSocket?.port;
}

/** The ConfigMap (or Secret) volume that holds `file`, and the key inside it. */
function mountedSource(workload: K8sObject, c: Container, file: string): { volume: any; key: string } {
  const mount = (c.volumeMounts ?? []).find((m: any) => file.startsWith(`${m.mountPath}/`));
  if (!mount) throw new Error(`${workload.metadata?.name}/${c.name}: nothing is mounted at ${path.dirname(file)}`);
  const volume = podSpec(workload).volumes.find((v: any) => v.name === mount.name);
  return { volume, key: file.slice(mount.mountPath.length + 1) };
}

describeIfKubectl.each(KUSTOMIZATIONS)(skippedTitle('kustomization %s', noKubectl), (dir) => {
  let objects: K8sObject[];
  let strict: StrictKeyChecker;
  let sts: K8sObject;
  let shardMapCm: K8sObject;
  let config: Record<string, string>;
  let map: ShardMap;
  let dims: { numLayers: number; numExperts: number; hidden: number; intermediate: number };

  beforeAll(() => {
    objects = render(kubectl!, path.join(K8S, dir));
    const kinds = [...new Map(objects.map((o) => [`${o.apiVersion}/${o.kind}`, [o.apiVersion, o.kind] as [string, string]])).values()];
    strict = new StrictKeyChecker(kinds);
    sts = find(objects, 'StatefulSet', EXPERT_STS);
    shardMapCm = find(objects, 'ConfigMap', 'turbosparse-shard-map');
    config = (find(objects, 'ConfigMap', 'turbosparse-config') as any).data;
    const data = (shardMapCm as any).data as Record<string, string>;
    dims = {
      numLayers: Number(data['model-layers']),
      numExperts: Number(data['model-experts']),
      hidden: Number(data['model-hidden']),
      intermediate: Number(data['model-intermediate']),
    };
    map = parseShardMap(data['shard-map.yaml'], `${dir} ConfigMap ${shardMapCm.metadata?.name}`);
  });

  test('every object passes the Kubernetes schema and has no unknown keys', () => {
    const problems = objects.flatMap((o) => [...schemaErrors(o), ...strict.unknownKeys(o)]);
    expect(problems).toEqual([]);
    expect(objects.length).toBeGreaterThan(15);
  });

  test('everything lives in the turbosparse namespace, names are unique, images are pinned', () => {
    const namespaced = objects.filter((o) => o.kind !== 'Namespace');
    expect(namespaced.filter((o) => o.metadata?.namespace !== NAMESPACE).map(objectName)).toEqual([]);
    expect(find(objects, 'Namespace', NAMESPACE).metadata?.labels?.['pod-security.kubernetes.io/enforce']).toBe('restricted');
    const keys = objects.map((o) => `${o.kind}/${o.metadata?.name}`);
    expect(new Set(keys).size).toBe(keys.length);
    for (const w of workloads(objects)) {
      for (const c of [...podSpec(w).containers, ...(podSpec(w).initContainers ?? [])]) {
        expect(`${c.name}: ${c.image}`).toMatch(/^[^:]+: [^@\s]+(:(?!latest$)[\w][\w.-]*)(@sha256:[0-9a-f]{64})?$|@sha256:[0-9a-f]{64}$/);
      }
    }
  });

  test('the shard map has exactly one entry per expert pod, in ordinal order, at the pod\'s stable address', () => {
    const replicas = (sts.spec as any).replicas;
    expect(map.nodes).toHaveLength(replicas);
    const svc = find(objects, 'Service', (sts.spec as any).serviceName);
    expect((svc.spec as any).clusterIP).toBe('None');
    expect(matches((svc.spec as any).selector, podLabels(sts))).toBe(true);
    const grpcPort = Number(parseArgs(container(sts, EXPERT_CONTAINER).args).flags.get('--port'));
    map.nodes.forEach((node, i) => {
      expect(node.name).toBe(`${EXPERT_STS}-${i}`);
      expect(node.address).toBe(`${EXPERT_STS}-${i}.${svc.metadata?.name}:${grpcPort}`);
      expect(node.experts.length).toBeGreaterThan(0);
    });
  });

  test('each expert pod takes its shard from its ordinal (Downward API pod-index label)', () => {
    const c = container(sts, EXPERT_CONTAINER);
    const { subcommand, flags } = parseArgs(c.args);
    expect(c.command).toEqual(['node', '/app/bin/turbosparse.js']);
    expect(subcommand).toBe('expert-node');
    expect(flags.has('--experts')).toBe(false); // the shard map decides
    expect(flags.get('--shard-index')).toBe('$(POD_INDEX)');
    const podIndex = c.env.find((e: any) => e.name === 'POD_INDEX');
    expect(podIndex.valueFrom.fieldRef.fieldPath).toBe("metadata.labels['apps.kubernetes.io/pod-index']");
    const { volume, key } = mountedSource(sts, c, flags.get('--shard-map')!);
    expect(volume.configMap.name).toBe(shardMapCm.metadata?.name);
    expect(Object.keys((shardMapCm as any).data)).toContain(key);
  });

  test('the shard map covers every (layer, expert) of the model and is as balanced as balancedShardMap', () => {
    expect(dims.numLayers).toBeGreaterThan(0);
    expect(dims.numExperts).toBeGreaterThan(0);
    // parseShardMap with dims runs validateShardMap: every pair covered, in range, unique addresses.
    expect(() => parseShardMap((shardMapCm as any).data['shard-map.yaml'], dir, dims)).not.toThrow();
    const held = new Set(map.nodes.flatMap((n) => n.experts.map((p) => `${p.layer}:${p.expert}`)));
    expect(held.size).toBe(dims.numLayers * dims.numExperts);
    const perPair = expertBytes(dims.hidden, dims.intermediate, config.EXPERT_WEIGHTS as any);
    const worst = Math.max(...map.nodes.map((n) => n.experts.length * perPair));
    const reference = balancedShardMap(uniformPairs(dims, perPair), map.nodes.map((n) => n.address));
    expect(worst).toBeLessThanOrEqual(Math.max(...reference.nodes.map((n) => n.experts.length * perPair)));
  });

  test('the coordinator and the workers read the same shard-map ConfigMap as the StatefulSet', () => {
    for (const [name, cname, sub] of [['turbosparse-coordinator', 'coordinator', 'serve'], ['turbosparse-worker', 'worker', 'worker']]) {
      const w = find(objects, 'Deployment', name);
      const c = container(w, cname);
      const { subcommand, flags } = parseArgs(c.args);
      expect(subcommand).toBe(sub);
      const { volume, key } = mountedSource(w, c, flags.get('--experts')!);
      expect(volume.configMap.name).toBe(shardMapCm.metadata?.name);
      expect(key).toBe('shard-map.yaml');
    }
  });

  test('expert nodes open the ports their flags name, and the gRPC probes use the plaintext health port', () => {
    const c = container(sts, EXPERT_CONTAINER);
    const { flags } = parseArgs(c.args);
    const grpc = Number(flags.get('--port'));
    const health = Number(flags.get('--health-port'));
    const metrics = Number(flags.get('--metrics-port'));
    expect(new Set([grpc, health, metrics]).size).toBe(3);
    for (const p of [grpc, health, metrics]) expect(resolvePort(c, p)).toBe(p);
    expect(flags.get('--host')).toBe('0.0.0.0');
    for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
      expect(c[probe]?.grpc?.port).toBe(health);
    }
    // Weight loading from network storage takes minutes: the startup probe must allow it.
    expect(c.startupProbe.periodSeconds * c.startupProbe.failureThreshold).toBeGreaterThanOrEqual(600);
  });

  test('the coordinator is ready only when every expert is reachable (/ready) and alive on /health', () => {
    const w = find(objects, 'Deployment', 'turbosparse-coordinator');
    const c = container(w, 'coordinator');
    const port = Number(parseArgs(c.args).flags.get('--port'));
    expect(resolvePort(c, port)).toBe(port);
    expect(c.readinessProbe.httpGet).toEqual({ path: '/ready', port });
    expect(c.livenessProbe.httpGet).toEqual({ path: '/health', port });
    expect(c.startupProbe.httpGet.port).toBe(port);
    expect(c.startupProbe.periodSeconds * c.startupProbe.failureThreshold).toBeGreaterThanOrEqual(600);
    const key = c.env.find((e: any) => e.name === 'TURBOSPARSE_API_KEY');
    expect(key.valueFrom.secretKeyRef).toEqual({ name: 'turbosparse-api-key', key: 'api-key' });
    expect(parseArgs(c.args).flags.has('--api-key')).toBe(false); // never on the command line
  });

  test('the worker is probed on its metrics port: startup long enough to load, then /health for liveness and readiness', () => {
    const w = find(objects, 'Deployment', 'turbosparse-worker');
    const c = container(w, 'worker');
    const port = Number(parseArgs(c.args).flags.get('--metrics-port'));
    expect(parseArgs(c.args).flags.get('--metrics-host')).toBe('0.0.0.0'); // the kubelet probes from outside the pod
    for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
      expect(c[probe]?.httpGet?.path).toBe('/health');
      expect(resolvePort(c, c[probe].httpGet.port)).toBe(port);
    }
    expect(c.startupProbe.periodSeconds * c.startupProbe.failureThreshold).toBeGreaterThanOrEqual(600);
  });

  test('PodDisruptionBudgets: the expert nodes and the coordinator have one each, and none can block a drain forever', () => {
    const pdbs = objects.filter((o) => o.kind === 'PodDisruptionBudget');
    const covered = (name: string) => {
      const w = workloads(objects).find((x) => x.metadata?.name === name)!;
      return pdbs.filter((p) => selectorMatches((p.spec as any).selector, podLabels(w)));
    };
    for (const name of [EXPERT_STS, 'turbosparse-coordinator']) {
      expect(`${name}: ${covered(name).length} PDB(s)`).toBe(`${name}: 1 PDB(s)`);
      const spec = covered(name)[0].spec as any;
      const w = workloads(objects).find((x) => x.metadata?.name === name)!;
      const replicas = (w.spec as any).replicas ?? 1;
      // minAvailable >= replicas (or maxUnavailable 0) would refuse every eviction: drains hang.
      const allowed = spec.maxUnavailable !== undefined ? Number(spec.maxUnavailable) : replicas - Number(spec.minAvailable);
      expect(`${name}: ${allowed} eviction(s) allowed`).not.toMatch(/: (0|-\d+) eviction/);
    }
  });

  test('every probe of every container points at a port the container opens', () => {
    for (const w of workloads(objects)) {
      for (const c of podSpec(w).containers) {
        for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
          if (!c[probe] || c[probe].exec) continue;
          const open = resolvePort(c, probePort(c[probe])) !== undefined;
          expect(`${w.metadata?.name}/${c.name}.${probe} port ${probePort(c[probe])} ${open ? 'open' : 'not opened'}`).toMatch(/ open$/);
        }
      }
    }
  });

  test('every Service selects pods and targets ports those pods open', () => {
    for (const svc of objects.filter((o) => o.kind === 'Service')) {
      const spec = svc.spec as any;
      const targets = workloads(objects).filter((w) => matches(spec.selector, podLabels(w)));
      expect(`${svc.metadata?.name}: ${targets.length} workload(s)`).toBe(`${svc.metadata?.name}: 1 workload(s)`);
      for (const port of spec.ports) {
        const open = podSpec(targets[0]).containers.some((c: Container) => resolvePort(c, port.targetPort ?? port.port) !== undefined);
        expect(`${svc.metadata?.name}:${port.port} -> ${port.targetPort} ${open ? 'open' : 'closed'}`).toMatch(/open$/);
      }
    }
  });

  test('NetworkPolicies select real pods; expert gRPC only from the coordinator and workers', () => {
    const pods = workloads(objects).map((w) => ({ name: w.metadata!.name!, labels: podLabels(w), w }));
    for (const np of objects.filter((o) => o.kind === 'NetworkPolicy')) {
      const spec = np.spec as any;
      const selected = pods.filter((p) => selectorMatches(spec.podSelector, p.labels));
      expect(`${np.metadata?.name} selects ${selected.length > 0 ? 'pods' : 'nothing'}`).toBe(`${np.metadata?.name} selects pods`);
      for (const rule of spec.ingress ?? []) {
        for (const peer of rule.from ?? []) {
          if (peer.podSelector && !peer.namespaceSelector && Object.keys(peer.podSelector).length) {
            expect(pods.some((p) => selectorMatches(peer.podSelector, p.labels))).toBe(true);
          }
        }
        // Every allowed port is one the selected pods open.
        for (const port of rule.ports ?? []) {
          const open = selected.every((p) => podSpec(p.w).containers.some((c: Container) => resolvePort(c, port.port) !== undefined));
          expect(`${np.metadata?.name}: port ${port.port} ${open ? 'open' : 'not opened by the selected pods'}`).toMatch(/open$/);
        }
      }
    }
    // The expert policy: who may reach the gRPC port.
    const grpc = Number(parseArgs(container(sts, EXPERT_CONTAINER).args).flags.get('--port'));
    const expertPolicies = objects.filter((o) => o.kind === 'NetworkPolicy' &&
      selectorMatches((o.spec as any).podSelector, podLabels(sts)));
    expect(expertPolicies.some((p) => (p.spec as any).podSelector.matchLabels)).toBe(true); // not only default-deny
    const allowedFrom = new Set<string>();
    for (const np of expertPolicies) {
      expect((np.spec as any).policyTypes).toContain('Ingress');
      for (const rule of (np.spec as any).ingress ?? []) {
        const coversGrpc = !rule.ports || rule.ports.some((p: any) => p.port === grpc || p.port === 'grpc');
        if (!coversGrpc) continue;
        expect(rule.from?.length).toBeGreaterThan(0); // an empty `from` would admit everyone
        for (const peer of rule.from) {
          expect(peer.namespaceSelector).toBeUndefined();
          expect(peer.ipBlock).toBeUndefined();
          for (const p of pods.filter((x) => selectorMatches(peer.podSelector, x.labels))) allowedFrom.add(p.name);
        }
      }
    }
    expect([...allowedFrom].sort()).toEqual(['turbosparse-coordinator', 'turbosparse-worker']);
  });

  test('a PodDisruptionBudget and a spread across hosts protect the expert nodes', () => {
    const pdb = objects.find((o) => o.kind === 'PodDisruptionBudget' && selectorMatches((o.spec as any).selector, podLabels(sts)));
    expect(pdb).toBeDefined();
    expect((pdb!.spec as any).maxUnavailable).toBe(1);
    const spread = podSpec(sts).topologySpreadConstraints;
    expect(spread).toEqual(expect.arrayContaining([expect.objectContaining({ topologyKey: 'kubernetes.io/hostname', maxSkew: 1 })]));
    for (const s of spread) expect(selectorMatches(s.labelSelector, podLabels(sts))).toBe(true);
  });

  test('expert resources are sized from the shard (host memory on CPU, GPU memory on GPU)', () => {
    expect(WEIGHT_DTYPES).toContain(config.EXPERT_WEIGHTS);
    const c = container(sts, EXPERT_CONTAINER);
    expect(parseArgs(c.args).flags.get('--weights')).toBe('$(EXPERT_WEIGHTS)');
    const perPair = expertBytes(dims.hidden, dims.intermediate, config.EXPERT_WEIGHTS as any);
    const worst = Math.max(...map.nodes.map((n) => n.experts.length * perPair));
    const request = bytesOf(c.resources.requests.memory);
    const limit = bytesOf(c.resources.limits.memory);
    expect(limit).toBeGreaterThanOrEqual(request);
    if (c.resources.limits['nvidia.com/gpu']) {
      // The weights live on the GPU: the node must land on a card with room for them.
      const terms = podSpec(sts).affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms;
      for (const term of terms) {
        const rule = term.matchExpressions.find((e: any) => e.key === 'nvidia.com/gpu.memory');
        expect(rule.operator).toBe('Gt');
        expect(Number(rule.values[0]) * MiB).toBeGreaterThanOrEqual(worst * HEADROOM);
      }
    } else {
      expect(request).toBeGreaterThanOrEqual(worst * HEADROOM);
    }
  });

  test('GPUs exactly where the overlay says so', () => {
    const gpuContainers = workloads(objects).flatMap((w) => podSpec(w).containers
      .filter((c: Container) => c.resources?.limits?.['nvidia.com/gpu'] !== undefined)
      .map((c: Container) => `${w.metadata?.name}/${c.name}=${c.resources.limits['nvidia.com/gpu']}`));
    if (dir.endsWith('gpu')) {
      expect(config.DEVICE).toBe('cuda');
      expect(gpuContainers.sort()).toEqual([
        'turbosparse-coordinator/coordinator=1', 'turbosparse-expert/expert-node=1', 'turbosparse-worker/worker=1']);
      for (const w of workloads(objects).filter((x) => podSpec(x).containers.some((c: Container) => c.resources?.limits?.['nvidia.com/gpu']))) {
        expect(podSpec(w).tolerations).toEqual(expect.arrayContaining([expect.objectContaining({ key: 'nvidia.com/gpu' })]));
      }
    } else {
      expect(gpuContainers).toEqual([]);
      expect(config.DEVICE).toBe(dir.endsWith('cpu') ? 'cpu' : 'auto');
    }
    expect(parseArgs(container(sts, EXPERT_CONTAINER).args).flags.get('--device')).toBe('$(DEVICE)');
    for (const [name, cname] of [['turbosparse-coordinator', 'coordinator'], ['turbosparse-worker', 'worker']]) {
      expect(parseArgs(container(find(objects, 'Deployment', name), cname).args).flags.get('--device')).toBe('$(DEVICE)');
    }
  });

  test('every $(VAR), ConfigMap, Secret and claim a pod uses exists', () => {
    const configMaps = new Map(objects.filter((o) => o.kind === 'ConfigMap').map((o) => [o.metadata!.name!, (o as any).data ?? {}]));
    const claims = new Set(objects.filter((o) => o.kind === 'PersistentVolumeClaim').map((o) => o.metadata!.name!));
    const secretKeys = (name: string) => OUT_OF_BAND_SECRETS[name] ??
      Object.keys((objects.find((o) => o.kind === 'Secret' && o.metadata?.name === name) as any)?.data ?? {});
    for (const w of workloads(objects)) {
      const spec = podSpec(w);
      for (const c of spec.containers) {
        const where = `${w.metadata?.name}/${c.name}`;
        const defined = new Set<string>();
        for (const from of c.envFrom ?? []) {
          expect(`${where} envFrom ${from.configMapRef?.name}: ${configMaps.has(from.configMapRef?.name)}`).toMatch(/true$/);
          for (const k of Object.keys(configMaps.get(from.configMapRef.name))) defined.add(k);
        }
        for (const e of c.env ?? []) {
          // Kubernetes expands $(VAR) only from variables defined before it.
          for (const ref of varRefs(e.value ?? '')) expect(`${where} env ${e.name} uses ${ref}: ${defined.has(ref)}`).toMatch(/true$/);
          const cmRef = e.valueFrom?.configMapKeyRef;
          if (cmRef) expect(`${where} ${cmRef.name}/${cmRef.key}: ${cmRef.key in (configMaps.get(cmRef.name) ?? {})}`).toMatch(/true$/);
          const sRef = e.valueFrom?.secretKeyRef;
          if (sRef) expect(secretKeys(sRef.name)).toContain(sRef.key);
          defined.add(e.name);
        }
        for (const s of [...(c.command ?? []), ...(c.args ?? [])]) {
          for (const ref of varRefs(s)) expect(`${where} "${s}" uses ${ref}: ${defined.has(ref)}`).toMatch(/true$/);
        }
      }
      for (const v of spec.volumes ?? []) {
        if (v.configMap) expect(`${w.metadata?.name} volume ${v.name}: ${configMaps.has(v.configMap.name)}`).toMatch(/true$/);
        if (v.persistentVolumeClaim) expect(claims.has(v.persistentVolumeClaim.claimName)).toBe(true);
        if (v.secret) expect(Object.keys(OUT_OF_BAND_SECRETS)).toContain(v.secret.secretName);
      }
    }
  });

  test('mTLS: expert nodes use the server certificate, the coordinator and workers the client one', () => {
    const users: Array<[K8sObject, string, string]> = [
      [sts, EXPERT_CONTAINER, 'turbosparse-expert-tls'],
      [find(objects, 'Deployment', 'turbosparse-coordinator'), 'coordinator', 'turbosparse-client-tls'],
      [find(objects, 'Deployment', 'turbosparse-worker'), 'worker', 'turbosparse-client-tls'],
    ];
    for (const [w, cname, secret] of users) {
      const c = container(w, cname);
      const { flags } = parseArgs(c.args);
      const expected: Record<string, string> = { '--tls-cert': 'tls.crt', '--tls-key': 'tls.key', '--tls-ca': 'ca.crt' };
      for (const [flag, key] of Object.entries(expected)) {
        const { volume, key: got } = mountedSource(w, c, flags.get(flag)!);
        expect(volume.secret.secretName).toBe(secret);
        expect(got).toBe(key);
      }
    }
  });

  test('Redis keeps every job: persistent volume, AOF on, noeviction below the memory limit', () => {
    const redis = find(objects, 'StatefulSet', 'turbosparse-redis');
    const c = container(redis, 'redis');
    const { volume, key } = mountedSource(redis, c, c.command[1]);
    const conf: string = (objects.find((o) => o.kind === 'ConfigMap' && o.metadata?.name === volume.configMap.name) as any).data[key];
    const setting = (name: string) => new RegExp(`^${name}\\s+(\\S+)\\s*$`, 'm').exec(conf)?.[1];
    expect(setting('maxmemory-policy')).toBe('noeviction');
    expect(setting('appendonly')).toBe('yes');
    expect(bytesOf(setting('maxmemory')!.replace(/mb$/, 'Mi').replace(/gb$/, 'Gi'))).toBeLessThan(bytesOf(c.resources.limits.memory));
    const dataMount = c.volumeMounts.find((m: any) => m.mountPath === setting('dir'));
    expect((redis.spec as any).volumeClaimTemplates.map((t: any) => t.metadata.name)).toContain(dataMount.name);
    expect(conf).toBe(fs.readFileSync(path.join(DEPLOY, 'redis', 'redis.conf'), 'utf8'));
    const worker = container(find(objects, 'Deployment', 'turbosparse-worker'), 'worker');
    expect(parseArgs(worker.args).flags.get('--redis')).toBe('$(REDIS_URL)');
    expect(config.REDIS_URL).toBe(`redis://${(redis.spec as any).serviceName}:${c.ports[0].containerPort}`);
  });

  test('telemetry goes to the collector, which runs the same config as docker-compose', () => {
    const collector = find(objects, 'Deployment', 'turbosparse-otel-collector');
    const svc = find(objects, 'Service', 'turbosparse-otel-collector');
    const url = new URL(config.OTEL_EXPORTER_OTLP_ENDPOINT);
    expect(url.hostname).toBe(svc.metadata?.name);
    const svcPort = (svc.spec as any).ports.find((p: any) => p.port === Number(url.port));
    expect(resolvePort(container(collector, 'otel-collector'), svcPort.targetPort)).toBe(4317);
    expect(config.OTEL_EXPORTER_OTLP_PROTOCOL).toBe('grpc');
    for (const [w, cname, service] of [[sts, EXPERT_CONTAINER, 'turbosparse-expert-node'],
      [find(objects, 'Deployment', 'turbosparse-coordinator'), 'coordinator', 'turbosparse-coordinator'],
      [find(objects, 'Deployment', 'turbosparse-worker'), 'worker', 'turbosparse-worker']] as Array<[K8sObject, string, string]>) {
      expect(container(w, cname).env.find((e: any) => e.name === 'OTEL_SERVICE_NAME').value).toBe(service);
    }
    const cm: any = objects.find((o) => o.kind === 'ConfigMap' &&
      o.metadata?.name === podSpec(collector).volumes.find((v: any) => v.configMap).configMap.name);
    expect(cm.data['config.yaml']).toBe(fs.readFileSync(path.join(DEPLOY, 'otel-collector', 'config.yaml'), 'utf8'));
    expect(container(collector, 'otel-collector').args).toEqual(['--config=/etc/otelcol/config.yaml']);
  });

  test('the collector scrapes every metrics port: through headless Services, bound to all interfaces, let in by the policies', () => {
    const collector = find(objects, 'Deployment', 'turbosparse-otel-collector');
    const cm: any = objects.find((o) => o.kind === 'ConfigMap' &&
      o.metadata?.name === podSpec(collector).volumes.find((v: any) => v.configMap).configMap.name);
    const jobs: any[] = YAML.parse(cm.data['config.yaml']).receivers.prometheus.config.scrape_configs;
    const byDns = new Map<string, number>(jobs.flatMap((j) => (j.dns_sd_configs ?? [])
      .flatMap((d: any) => d.names.map((n: string) => [n, Number(d.port)] as [string, number]))));
    const policies = objects.filter((o) => o.kind === 'NetworkPolicy');
    const scraped = new Set<string>();
    for (const [name, port] of byDns) {
      const svc = find(objects, 'Service', name);
      expect((svc.spec as any).clusterIP).toBe('None'); // one A record per pod, not one virtual IP
      expect((svc.spec as any).ports.map((p: any) => p.port)).toContain(port);
      for (const w of workloads(objects).filter((x) => matches((svc.spec as any).selector, podLabels(x)))) {
        const c = podSpec(w).containers.find((x: Container) => Number(parseArgs(x.args ?? []).flags.get('--metrics-port')) === port);
        expect(`${name} -> ${w.metadata?.name} serves metrics on ${port}: ${c !== undefined}`).toMatch(/true$/);
        const { flags } = parseArgs(c.args);
        expect(flags.get('--metrics-host') ?? flags.get('--host')).toBe('0.0.0.0');
        expect(resolvePort(c, port)).toBe(port);
        const admits = policies.some((np) => selectorMatches((np.spec as any).podSelector, podLabels(w)) &&
          ((np.spec as any).ingress ?? []).some((rule: any) => rule.ports?.some((p: any) => p.port === port) &&
            rule.from?.some((peer: any) => peer.podSelector && selectorMatches(peer.podSelector, podLabels(collector)))));
        expect(`${w.metadata?.name}:${port} open to the collector: ${admits}`).toMatch(/true$/);
        scraped.add(w.metadata!.name!);
      }
    }
    // Every container with a metrics port is one of them.
    for (const w of workloads(objects)) {
      for (const c of podSpec(w).containers) {
        if (parseArgs(c.args ?? []).flags.has('--metrics-port')) expect(`${w.metadata?.name} scraped: ${scraped.has(w.metadata!.name!)}`).toMatch(/true$/);
      }
    }
    expect([...scraped].sort()).toEqual([EXPERT_STS, 'turbosparse-worker']);
  });

  test('pods run as non-root with a read-only root filesystem and no service-account token', () => {
    for (const w of workloads(objects)) {
      const spec = podSpec(w);
      expect(`${w.metadata?.name} runAsNonRoot=${spec.securityContext?.runAsNonRoot}`).toMatch(/=true$/);
      expect(spec.securityContext.runAsUser).toBeGreaterThan(0);
      expect(spec.securityContext.seccompProfile?.type).toBe('RuntimeDefault');
      expect(spec.automountServiceAccountToken).toBe(false);
      for (const c of spec.containers) {
        expect(c.securityContext).toEqual(expect.objectContaining({
          allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } }));
      }
    }
  });
});

describeIfKubectl('the committed sources agree', () => {
  test('k8s/base keeps byte-identical copies of the collector config and redis.conf from deploy/', () => {
    expect(readText('k8s', 'base', 'otel-collector', 'config.yaml')).toBe(readText('deploy', 'otel-collector', 'config.yaml'));
    expect(readText('k8s', 'base', 'redis', 'redis.conf')).toBe(readText('deploy', 'redis', 'redis.conf'));
  });
});
