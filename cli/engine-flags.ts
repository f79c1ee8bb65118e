// Flags every command that runs the model shares: where experts run, device, threads, weights,
// and the client side of mTLS to expert nodes.
import type { Command } from 'commander';
import { RUN_TRANSPORTS, type RunTransport, tlsChannel } from '../coordinator/expert-client';
import { DEFAULT_SPECULATIVE_MAX_BATCH, OVERLAP_MODES, type OverlapMode } from '../coordinator/engine';
import { parseSpeculativeChoice } from '../coordinator/speculative/parse';
import { parseExpertsChoice, type EngineOptions } from '../coordinator/load-engine';
import { remoteExpertsFactory } from '../coordinator/remote-factory';
import { KV_DTYPE_BYTES, type Device, type KvDType, type StoreDType } from '../core/native';
import { loadTlsFiles, type TlsFlags } from '../core/tls-files';
import { WIRE_ENCODINGS, type WireEncoding } from '../core/wire/rows';
import { addKernelOptions, choiceOption, intOption } from './options';

export interface EngineFlags extends TlsFlags {
  model: string;
  experts: string;
  /** Rows to and from expert nodes (cluster:N or FILE); absent: f32. */
  wire?: WireEncoding;
  device: Device | 'auto';
  threads: number;
  weights: StoreDType | 'auto';
  dense?: boolean;
  /** KV-cache storage; absent: f32. */
  kvDtype?: KvDType;
  /** Ceiling of an expert-node call's deadline; absent: 30 s. */
  callTimeoutMs?: number;
  /** Send a late node call to a replica too; absent: on. */
  hedge?: 'on' | 'off';
  /** How node calls travel; absent: auto. */
  expertTransport?: RunTransport;
  /** Two pipelined micro-batches per step; absent: auto (when the experts are remote). */
  overlap?: OverlapMode;
  /** Speculative decoding proposer: ngram[:K[:N]] | suffix[:K] | draft:DIR[:K]; absent: off. */
  speculative?: string;
  /** Steps with more decoding sequences propose nothing; absent: DEFAULT_SPECULATIVE_MAX_BATCH. */
  speculativeMaxBatch?: number;
}

export function addEngineOptions(cmd: Command): Command {
  cmd.option('--experts <where>', 'local | cluster:N (N expert-node processes on loopback) | shard-map FILE', 'local')
    .option('--wire <encoding>', 'hidden/output rows to expert nodes: f32 (bit-exact) | bf16 | int8 (one scale per row)',
      choiceOption('--wire', WIRE_ENCODINGS), 'f32')
    .option('--call-timeout-ms <ms>', 'longest an expert-node call may take (the deadline until a node\'s latency is measured, ' +
      'or when no replica can take over); measured: 4 x its p99, at least 500 ms', intOption('--call-timeout-ms', 1), 30_000)
    .option('--hedge <on|off>', 'a node call still unanswered past its p99 also goes to a replica; the first answer wins',
      choiceOption('--hedge', ['on', 'off'] as const), 'on')
    .option('--expert-transport <auto|socket|grpc>', 'how expert-node calls travel: socket (the same messages over plain TCP/TLS ' +
      'on the node\'s port, without HTTP/2: less per-call cost) | grpc | auto (socket where the node serves it)',
      choiceOption('--expert-transport', RUN_TRANSPORTS), 'auto')
    .option('--overlap <auto|on|off>', 'split each step in two micro-batches pipelined layer by layer, so one\'s expert calls are ' +
      'on the wire while the other computes (same tokens); auto: with remote experts, whichever measures faster per batch size',
      choiceOption('--overlap', OVERLAP_MODES), 'auto')
    .option('--speculative <spec>', 'propose tokens each decode step verifies in one forward pass (same output, fewer round trips): ' +
      'ngram[:K[:N]] (prompt/output lookup) | suffix[:K] (suffix index, learns from other requests) | draft:DIR[:K] (a small model of the same tokenizer)')
    .option('--speculative-max-batch <n>', 'with --speculative: steps with more decoding sequences than this propose nothing (extra rows cost ' +
      'compute a large batch has no spare of)', intOption('--speculative-max-batch', 0), DEFAULT_SPECULATIVE_MAX_BATCH)
    .option('--kv-dtype <dtype>', 'KV-cache storage: f32 | bf16 | f16 (16 bits: half the memory, attention math stays f32)',
      choiceOption('--kv-dtype', Object.keys(KV_DTYPE_BYTES) as KvDType[]), 'f32');
  return addKernelOptions(cmd, 'dense-with-mask expert FFN (same tokens; the speed baseline)')
    .option('--tls-cert <file>', 'mTLS to the expert nodes of --experts FILE: our client certificate (PEM)')
    .option('--tls-key <file>', 'mTLS: the private key of --tls-cert (PEM)')
    .option('--tls-ca <file>', 'TLS: the CA that signed the expert nodes\' certificates (PEM); none of the three: plaintext');
}

export function engineOptionsFrom(flags: EngineFlags): EngineOptions {
  // Read now: a wrong path is one line before the model starts loading.
  const tls = loadTlsFiles(flags, 'client');
  return {
    modelDir: flags.model,
    experts: parseExpertsChoice(flags.experts),
    device: flags.device,
    threads: flags.threads,
    weights: flags.weights,
    dense: flags.dense,
    kvDtype: flags.kvDtype,
    overlap: flags.overlap,
    speculative: flags.speculative === undefined ? undefined : parseSpeculativeChoice(flags.speculative),
    speculativeMaxBatch: flags.speculativeMaxBatch,
    // cluster:N nodes inherit this command's weights/device/threads/FFN choices.
    remoteExperts: remoteExpertsFactory({ wire: flags.wire, weights: flags.weights, device: flags.device, threads: flags.threads, dense: flags.dense,
      callTimeoutMs: flags.callTimeoutMs, hedge: flags.hedge === undefined ? undefined : flags.hedge === 'on',
      transport: flags.expertTransport, channelFactory: tls && tlsChannel(tls) }),
  };
}
