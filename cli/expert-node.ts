// `turbosparse expert-node`: serve some (layer, expert) pairs of a model over gRPC.
// Also runnable on its own (`node dist/cli/expert-node.js --model ...`): that is
// how coordinator/local-cluster.ts spawns `cluster:N` nodes without loading the
// whole CLI.
import { Command } from 'commander';
import { type ExpertNodeOptions, serveUntilStopped } from '../expert-node/main';
import { addKernelOptions, explainExpertSpec, floatOption, intOption, oneLineErrors } from './options';

/** The flags are the node's options, less what only code can pass. */
type ExpertNodeFlags = Omit<ExpertNodeOptions, 'hooks' | 'log'>;

function configure(cmd: Command): Command {
  cmd
    .description('serve (layer, expert) pairs of a model to coordinators over gRPC')
    .requiredOption('--model <dir>', 'Hugging Face model folder (only the listed experts are read)')
    .option('--experts <spec>', 'pairs to hold: LAYERS:EXPERTS items, e.g. "0-31:0-3" or "0:1,0:5,3:*"')
    .option('--shard-map <file>', 'instead of --experts: hold the pairs of one entry of this shard map (YAML or JSON)')
    .option('--shard-index <n>', 'with --shard-map: which entry (e.g. a StatefulSet pod ordinal)', intOption('--shard-index'))
    .option('--port <p>', 'port to listen on; 0 = any free port', intOption('--port'), 50051)
    .option('--host <h>', 'address to bind (0.0.0.0 for all interfaces)', '127.0.0.1');
  return addKernelOptions(cmd, 'dense-with-mask expert FFN (same outputs; the speed baseline)')
    .option('--grace-ms <ms>', 'on SIGTERM, finish queued work for up to this long', intOption('--grace-ms'), 10_000)
    .option('--max-queue-mb <mb>', 'requests that may wait for the kernels; beyond it they are refused (RESOURCE_EXHAUSTED) and go to replicas',
      intOption('--max-queue-mb', 1), 1024)
    .option('--name <name>', 'name for log lines and Info (placement tables)')
    .option('--memory-gib <g>', 'memory budget for expert weights in GiB: a start or LoadExperts past it is refused (default: none)',
      floatOption('--memory-gib', 0, 2 ** 20))
    .option('--no-self-benchmark', 'skip timing the FFN at start (Info then reports ffn_bytes_per_s 0; for tests that start many nodes)')
    .option('--slowdown <f>', 'testing/benchmarks only: answer as a node F times slower (waits (F-1) x each compute)',
      floatOption('--slowdown', 1, 1000), 1)
    .option('--metrics-port <p>', 'serve Prometheus metrics at http://HOST:P/metrics (0 = any free port)', intOption('--metrics-port'))
    .option('--health-port <p>', 'also serve gRPC health alone, in plaintext, on this port (kubelet probes; 0 = any free port)',
      intOption('--health-port'))
    .option('--tls-cert <file>', 'TLS: this node\'s certificate (PEM); none of the --tls-* flags: plaintext')
    .option('--tls-key <file>', 'TLS: the private key of --tls-cert (PEM)')
    .option('--tls-ca <file>', 'mTLS: require client certificates signed by this CA (PEM)')
    .action(async (flags: ExpertNodeFlags) => {
      await serveUntilStopped({ ...flags });
    });
}

/** Adds the `expert-node` subcommand to the `turbosparse` program. */
export function registerExpertNode(program: Command): void {
  configure(program.command('expert-node'));
}

/** The command on its own (`node dist/cli/expert-node.js`), as local-cluster.ts spawns it. */
export function expertNodeProgram(): Command {
  return oneLineErrors(explainExpertSpec(configure(new Command('turbosparse expert-node')).exitOverride()));
}

if (require.main === module) {
  expertNodeProgram().parseAsync(process.argv).catch((e: unknown) => {
    // Same rule as cli/main.ts: a user error is one line, a bug keeps its stack.
    const err = e as Error & { exitCode?: number; code?: string };
    if (err.code?.startsWith('commander.')) process.exitCode = err.exitCode === 0 ? 0 : 2; // usage errors exit 2, like cli/main.ts
    else if (err.name === 'UserError') {
      process.stderr.write(`error: ${err.message}\n`);
      process.exitCode = 2;
    } else {
      process.stderr.write(`${err.stack ?? String(err)}\n`);
      process.exitCode = 1;
    }
  });
}
