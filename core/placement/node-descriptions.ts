// nodes.yaml: the machines a shard map is planned for, by hand or from the
// nodes' own Info (each node measures its sparse-FFN speed at start).
//
//   nodes:
//     - name: gpu-a
//       address: 10.0.0.5:50051   # "local" = the coordinator itself (its experts skip the network)
//       memory_gib: 22            # expert weights it may hold
//       device: cuda              # cpu | cuda (for tables)
//       gbps: 600                 # sparse-FFN read speed, GB/s (10^9 bytes of weights read per second)
import fs from 'node:fs';
import YAML from 'yaml';
import { z } from 'zod';
import { UserError } from '../errors';

/** The shard-map address of the coordinator's own experts. */
export const LOCAL_ADDRESS = 'local';

export interface NodeDescription {
  name: string;
  /** host:port, or LOCAL_ADDRESS. */
  address: string;
  /** Expert weight bytes it may hold. */
  memoryBytes: number;
  device: string;
  /** Weight bytes the sparse FFN reads per second. */
  bytesPerS: number;
}

const GiB = 2 ** 30;

const fileSchema = z.strictObject({
  nodes: z.array(z.strictObject({
    name: z.string().min(1).optional(),
    address: z.string().min(1),
    memory_gib: z.number().positive(),
    device: z.string().min(1).optional(),
    gbps: z.number().positive(),
  })).min(1),
});

export function loadNodeDescriptions(file: string): NodeDescription[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new UserError(`--nodes-file ${file}: cannot read it (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  return parseNodeDescriptions(text, file);
}

export function parseNodeDescriptions(text: string, source: string): NodeDescription[] {
  let raw: unknown;
  try {
    raw = YAML.parse(text);
  } catch (e) {
    throw new UserError(`--nodes-file ${source}: not valid YAML or JSON (${(e as Error).message.split('\n')[0]})`);
  }
  const parsed = fileSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue.path.length ? issue.path.join('.') : '(top level)';
    throw new UserError(`--nodes-file ${source}: ${where}: ${issue.message} ` +
      '(expected nodes: [{name: gpu-a, address: "host:port", memory_gib: 22, device: cuda, gbps: 600}])');
  }
  const nodes = parsed.data.nodes.map((n, i) => ({
    name: n.name ?? (n.address === LOCAL_ADDRESS ? 'local' : `node-${i}`),
    address: n.address.trim(),
    memoryBytes: n.memory_gib * GiB,
    device: n.device ?? 'cpu',
    bytesPerS: n.gbps * 1e9,
  }));
  const seen = new Set<string>();
  nodes.forEach((n, i) => {
    if (n.address !== LOCAL_ADDRESS && !/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):\d{1,5}$/.test(n.address)) {
      throw new UserError(`--nodes-file ${source}: nodes.${i}.address "${n.address}" is not host:port (or "${LOCAL_ADDRESS}" for the coordinator)`);
    }
    if (seen.has(n.address)) throw new UserError(`--nodes-file ${source}: address ${n.address} appears twice (list each node once)`);
    seen.add(n.address);
  });
  return nodes;
}

/** The file's text for `nodes` (what `rebalance --dry-run` and `plan` print). */
export function formatNodeDescriptions(nodes: NodeDescription[]): string {
  return YAML.stringify({
    nodes: nodes.map((n) => ({
      name: n.name, address: n.address, memory_gib: Math.round((n.memoryBytes / GiB) * 100) / 100, device: n.device,
      gbps: Math.round((n.bytesPerS / 1e9) * 1000) / 1000,
    })),
  });
}
