// Helpers for the deployment tests: render kustomizations with kubectl, find objects, read
// container args and Kubernetes quantities.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import type { K8sObject } from './k8s-schema';

export const ROOT = path.resolve(__dirname, '..', '..');
export const K8S = path.join(ROOT, 'k8s');
export const DEPLOY = path.join(ROOT, 'deploy');

/** Secrets the manifests use that k8s/scripts/make-secrets.sh makes (none live in the repo). */
export const OUT_OF_BAND_SECRETS: Record<string, string[]> = {
  'turbosparse-api-key': ['api-key'],
  'turbosparse-expert-tls': ['tls.crt', 'tls.key', 'ca.crt'],
  'turbosparse-client-tls': ['tls.crt', 'tls.key', 'ca.crt'],
};

/** Every kustomization a user can apply: the base and each overlay. */
export const KUSTOMIZATIONS = ['base', 'overlays/cpu', 'overlays/gpu'];

/** kubectl on PATH (or KUBECTL), else null: the render tests skip with a message. */
export function findKubectl(): string | null {
  if (process.env.KUBECTL && fs.existsSync(process.env.KUBECTL)) return process.env.KUBECTL;
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    const file = path.join(dir, 'kubectl');
    try {
      fs.accessSync(file, fs.constants.X_OK);
      return file;
    } catch {
      // not here
    }
  }
  return null;
}

export function parseYamlDocuments(text: string, source: string): K8sObject[] {
  return YAML.parseAllDocuments(text)
    .map((doc) => {
      if (doc.errors.length) throw new Error(`${source}: ${doc.errors[0].message}`);
      return doc.toJS() as K8sObject | null;
    })
    .filter((o): o is K8sObject => o !== null);
}

/** `kubectl kustomize DIR`, parsed. */
export function render(kubectl: string, dir: string): K8sObject[] {
  const out = execFileSync(kubectl, ['kustomize', dir], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  return parseYamlDocuments(out, dir);
}

/** The object of that kind and name; ConfigMaps/Secrets also by their pre-hash name. */
export function find(objects: K8sObject[], kind: string, name: string): K8sObject {
  const hit = objects.find((o) => o.kind === kind && (o.metadata?.name === name ||
    ((kind === 'ConfigMap' || kind === 'Secret') && new RegExp(`^${name}-[a-z0-9]{10}$`).test(o.metadata?.name ?? ''))));
  if (!hit) throw new Error(`no ${kind} ${name} in the rendered manifests`);
  return hit;
}

/* eslint-disable @typescript-eslint/no-explicit-any */
export type Container = Record<string, any>;
export type PodSpec = Record<string, any>;

/** The pod template's spec of a Deployment/StatefulSet/Job. */
export function podSpec(workload: K8sObject): PodSpec {
  const spec = (workload.spec as any)?.template?.spec;
  if (!spec) throw new Error(`${workload.kind}/${workload.metadata?.name} has no pod template`);
  return spec;
}

export function podLabels(workload: K8sObject): Record<string, string> {
  return (workload.spec as any)?.template?.metadata?.labels ?? {};
}

export function container(workload: K8sObject, name: string): Container {
  const c = podSpec(workload).containers.find((x: Container) => x.name === name);
  if (!c) throw new Error(`${workload.metadata?.name} has no container ${name}`);
  return c;
}

export const WORKLOAD_KINDS = new Set(['Deployment', 'StatefulSet', 'DaemonSet', 'Job']);

export function workloads(objects: K8sObject[]): K8sObject[] {
  return objects.filter((o) => WORKLOAD_KINDS.has(o.kind));
}

/**
 * Container args as flag -> value. `--flag=value` and `--flag value` both work (commander
 * accepts both); a flag without a value maps to ''. The first non-flag word is the subcommand.
 */
export function parseArgs(args: string[]): { subcommand: string | undefined; flags: Map<string, string> } {
  const flags = new Map<string, string>();
  let subcommand: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      if (eq > 0) flags.set(a.slice(0, eq), a.slice(eq + 1));
      else if (i + 1 < args.length && !args[i + 1].startsWith('--')) flags.set(a, args[++i]);
      else flags.set(a, '');
    } else if (subcommand === undefined) {
      subcommand = a;
    }
  }
  return { subcommand, flags };
}

const BINARY_SUFFIX: Record<string, number> = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40 };
const DECIMAL_SUFFIX: Record<string, number> = { k: 1e3, M: 1e6, G: 1e9, T: 1e12 };

/** A Kubernetes memory quantity ("24Gi", "512M", "1073741824") in bytes. */
export function bytesOf(quantity: string | number): number {
  const m = /^(\d+(?:\.\d+)?)([KMGT]i|[kMGT])?$/.exec(String(quantity));
  if (!m) throw new Error(`not a memory quantity: ${quantity}`);
  const scale = m[2] ? (BINARY_SUFFIX[m[2]] ?? DECIMAL_SUFFIX[m[2]]) : 1;
  return Number(m[1]) * scale;
}

/** `$(VAR)` references in a string (Kubernetes expands them from the container's env). */
export function varRefs(s: string): string[] {
  return [...s.matchAll(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g)].map((m) => m[1]);
}

export function readText(...parts: string[]): string {
  return fs.readFileSync(path.join(ROOT, ...parts), 'utf8');
}
