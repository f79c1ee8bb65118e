// Builds the remote expert backend for `--experts cluster:N | FILE`: the
// RemoteExpertsFactory that coordinator/load-engine.ts takes, so the engine
// itself never imports gRPC.
import type { ModelFolder } from '../core/model-folder';
import type { Device, StoreDType } from '../core/native';
import { loadShardMap } from '../core/shard-map';
import { isLoopbackAddress } from '../core/tls-files';
import type { ChannelFactory, RunTransport } from './expert-client';
import { UserError } from '../core/errors';
import { LOCAL_ADDRESS } from '../core/placement/node-descriptions';
import type { ExpertsChoice, LocalExpertsSetup, RemoteExpertsFactory } from './load-engine';
import { LocalCluster } from './local-cluster';
import { LocalExperts } from './local-experts';
import { RemoteExperts, type RemoteExpertsOptions } from './remote-experts';

export interface RemoteSetup
  extends Pick<RemoteExpertsOptions, 'wire' | 'callTimeoutMs' | 'hedge' | 'connectTimeoutMs' | 'healthCheckIntervalMs' | 'observers'> {
  /** cluster:N nodes: weight storage, device, threads per node, dense FFN. */
  weights?: StoreDType | 'auto';
  device?: Device | 'auto';
  threads?: number;
  dense?: boolean;
  /** cluster:N: copies of every pair on different nodes. */
  replicas?: number;
  /** cluster:N: how to run `expert-node` (default: the built CLI). */
  nodeCommand?: string[];
  /** cluster:N: each node's stderr lines. */
  nodeLog?: (line: string) => void;
  /**
   * How to reach the nodes of a shard-map FILE (tlsChannel for mTLS); absent:
   * plaintext, with a warning line when an address is not loopback. cluster:N
   * nodes listen on loopback only and are always reached in plaintext.
   */
  channelFactory?: ChannelFactory;
  /** How Run's calls travel (default auto: a run socket where the node serves one, else gRPC). */
  transport?: RunTransport;
}

/** A backend for a shard-map file or a local cluster (whose nodes stop when it closes). */
export async function createRemoteExperts(choice: Exclude<ExpertsChoice, { kind: 'local' }>, folder: ModelFolder,
  log: (line: string) => void, setup: RemoteSetup = {}, localSetup?: LocalExpertsSetup): Promise<RemoteExperts> {
  const c = folder.config;
  const model = { hiddenSize: c.hiddenSize, intermediateSize: c.intermediateSize, numLayers: c.numLayers, numExperts: c.numExperts };
  const common = {
    model, log, wire: setup.wire, callTimeoutMs: setup.callTimeoutMs, hedge: setup.hedge, connectTimeoutMs: setup.connectTimeoutMs,
    healthCheckIntervalMs: setup.healthCheckIntervalMs, channelFactory: setup.channelFactory, observers: setup.observers,
    transport: setup.transport,
  };
  if (choice.kind === 'file') {
    const shardMap = loadShardMap(choice.path, model);
    const exposed = shardMap.nodes.map((n) => n.address).filter((a) => a !== LOCAL_ADDRESS && !isLoopbackAddress(a));
    if (!setup.channelFactory && exposed.length) {
      log(`warning: plaintext gRPC to ${exposed.length} expert node(s) not on loopback (${exposed.slice(0, 3).join(', ')}` +
        `${exposed.length > 3 ? ', ...' : ''}): hidden states travel unencrypted and any client may call the nodes; ` +
        'give --tls-cert, --tls-key and --tls-ca for mTLS');
    }
    // The shard map's "local" node: its pairs load here, on the coordinator's own device.
    const localNode = shardMap.nodes.find((n) => n.address === LOCAL_ADDRESS);
    if (localNode && !localSetup) throw new UserError(`shard map ${choice.path}: node "${LOCAL_ADDRESS}" needs the coordinator's own device; give its pairs to an expert node`);
    let local: LocalExperts | undefined;
    if (localNode && localSetup) {
      const t0 = Date.now();
      local = await LocalExperts.loadPairs(folder, localSetup.backend, localNode.experts, { store: localSetup.store, mode: localSetup.mode });
      log(`local experts: ${localNode.experts.length} pair(s) loaded in process in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    }
    try {
      return await RemoteExperts.connect({ ...common, shardMap, name: choice.path, local });
    } catch (e) {
      await local?.close();
      throw e;
    }
  }
  if (setup.channelFactory) {
    log(`cluster:${choice.nodes}: the expert nodes listen on loopback only, in plaintext (--tls-* apply to a shard-map FILE)`);
  }
  const t0 = Date.now();
  log(`cluster: starting ${choice.nodes} expert node(s) on loopback`);
  const cluster = await LocalCluster.start({
    modelDir: folder.dir, dims: model, nodes: choice.nodes, replicas: setup.replicas, weights: setup.weights,
    device: setup.device, threads: setup.threads, dense: setup.dense, nodeCommand: setup.nodeCommand, log, nodeLog: setup.nodeLog,
  });
  try {
    const remote = await RemoteExperts.connect({ ...common, channelFactory: undefined, shardMap: cluster.shardMap,
      name: `cluster:${choice.nodes}`, onClose: () => cluster.stop() });
    log(`cluster: ${choice.nodes} node(s) SERVING in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    return remote;
  } catch (e) {
    await cluster.stop();
    throw e;
  }
}

/** The factory load-engine.ts takes, with the flags of the command that runs it. */
export function remoteExpertsFactory(setup: RemoteSetup = {}): RemoteExpertsFactory {
  return (choice, folder, log, local) => createRemoteExperts(choice, folder, log, setup, local);
}
