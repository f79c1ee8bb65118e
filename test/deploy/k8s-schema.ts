// Checks Kubernetes objects two ways:
//  - the kubernetes-models 4.x validators (JSON schema from the Kubernetes OpenAPI: types,
//    required fields, enums), and
//  - a strict unknown-key walk, because those schemas allow extra properties, so a misspelt
//    `readinesProbe` passes them and the API server silently drops it (no probe at all).
// kubernetes-models ships its schemas as compiled validators with no property lists, but its
// .d.ts files describe every object exactly; the walk reads them with the TypeScript checker.
import path from 'node:path';
import ts from 'typescript';

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata?: { name?: string; namespace?: string; labels?: Record<string, string>; [k: string]: unknown };
  [k: string]: unknown;
}

const MODELS_DIR = path.dirname(require.resolve('kubernetes-models/package.json'));

/** kubernetes-models keeps `apps/v1` kinds under apps/v1/, core `v1` under v1/. */
function modelModule(obj: K8sObject): string {
  return path.join(MODELS_DIR, obj.apiVersion, obj.kind);
}

export function objectName(obj: K8sObject): string {
  return `${obj.kind}/${obj.metadata?.name ?? '?'}`;
}

/** Schema errors from the kubernetes-models validator ([] when valid). */
export function schemaErrors(obj: K8sObject): string[] {
  let Model: new (data: unknown) => { validate(): void };
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    Model = require(modelModule(obj))[obj.kind];
  } catch {
    return [`${objectName(obj)}: no kubernetes-models schema for ${obj.apiVersion} ${obj.kind}`];
  }
  try {
    new Model(obj).validate();
    return [];
  } catch (e) {
    return [`${objectName(obj)}: ${(e as Error).message}`];
  }
}

/** Finds keys that the object's type does not declare, at any depth. */
export class StrictKeyChecker {
  private readonly program: ts.Program;
  private readonly checker: ts.TypeChecker;
  private readonly roots = new Map<string, ts.Type>();

  /** `kinds`: the apiVersion/kind pairs to load, e.g. [['apps/v1', 'StatefulSet']]. */
  constructor(kinds: Array<[string, string]>) {
    const files = kinds.map(([apiVersion, kind]) => `${modelModule({ apiVersion, kind })}.d.ts`);
    this.program = ts.createProgram(files, { noEmit: true, skipLibCheck: true, types: [], noResolve: false });
    this.checker = this.program.getTypeChecker();
    kinds.forEach(([apiVersion, kind], i) => {
      const sf = this.program.getSourceFile(files[i]);
      const mod = sf && this.checker.getSymbolAtLocation(sf);
      const iface = mod && this.checker.getExportsOfModule(mod).find((s) => s.name === `I${kind}`);
      if (!iface) throw new Error(`kubernetes-models has no interface I${kind} in ${files[i]}`);
      this.roots.set(`${apiVersion}/${kind}`, this.checker.getDeclaredTypeOfSymbol(iface));
    });
  }

  /** Paths of unknown keys, each with the nearest known key as a hint. */
  unknownKeys(obj: K8sObject): string[] {
    const root = this.roots.get(`${obj.apiVersion}/${obj.kind}`);
    if (!root) return [`${objectName(obj)}: kind not loaded into the strict checker`];
    const problems: string[] = [];
    this.walk(obj, root, objectName(obj), problems);
    return problems;
  }

  private walk(value: unknown, type: ts.Type, at: string, problems: string[]): void {
    if (value === null || value === undefined) return;
    const t = this.checker.getNonNullableType(type);
    if (t.flags & (ts.TypeFlags.Any | ts.TypeFlags.Unknown)) return;
    const members = t.isUnion() ? t.types : [t];
    if (Array.isArray(value)) {
      const element = members.map((m) => this.arrayElement(m)).find((e) => e !== undefined);
      // A type mismatch (array where an object belongs) is the schema validator's to report.
      if (element) value.forEach((v, i) => this.walk(v, element, `${at}[${i}]`, problems));
      return;
    }
    if (typeof value !== 'object') return;
    const objects = members.filter((m) => (m.flags & ts.TypeFlags.Object) !== 0 && !this.arrayElement(m));
    if (objects.length === 0) return;
    for (const [key, child] of Object.entries(value as Record<string, unknown>)) {
      const prop = objects.map((o) => o.getProperty(key)).find((p) => p !== undefined);
      if (prop) {
        this.walk(child, this.checker.getTypeOfSymbol(prop), `${at}.${key}`, problems);
        continue;
      }
      const index = objects.map((o) => this.checker.getIndexTypeOfType(o, ts.IndexKind.String)).find((x) => x !== undefined);
      if (index) {
        this.walk(child, index, `${at}.${key}`, problems);
        continue;
      }
      const known = objects.flatMap((o) => o.getProperties().map((p) => p.name));
      const hint = nearest(key, known);
      problems.push(`${at}.${key}: unknown field${hint ? ` (did you mean "${hint}"?)` : ''}`);
    }
  }

  private arrayElement(t: ts.Type): ts.Type | undefined {
    if (this.checker.isArrayType(t) || this.checker.isTupleType(t)) {
      return this.checker.getTypeArguments(t as ts.TypeReference)[0];
    }
    return undefined;
  }
}

function nearest(word: string, candidates: string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestDistance) [best, bestDistance] = [c, d];
  }
  return bestDistance <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const above = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] === b[j - 1] ? 0 : 1));
      diagonal = above;
    }
  }
  return row[b.length];
}
