// The `turbosparse` flags the containers run with (k8s/ and deploy/docker-compose.yml). The CLI
// must accept every one; cli-contract.test.ts checks the manifests against this list and,
// once a subcommand is registered in cli/main.ts, this list against the real CLI.
export const CLI_CONTRACT: Record<string, string[]> = {
  'expert-node': [
    '--model', '--experts', '--port', '--host', '--health-port', '--metrics-port', '--device', '--threads',
    '--weights', '--shard-map', '--shard-index', '--tls-cert', '--tls-key', '--tls-ca',
  ],
  // --host as on expert-node: the HTTP server binds 127.0.0.1 by default, unreachable in a container.
  // --device/--threads: the engine flags serve and worker share with generate.
  serve: ['--model', '--experts', '--host', '--port', '--api-key', '--device', '--threads', '--tls-cert', '--tls-key', '--tls-ca'],
  // The workers call the expert nodes too, so they need the client side of mTLS like `serve`.
  // --metrics-host: the metrics port binds 127.0.0.1 by default, which the collector cannot scrape.
  worker: ['--model', '--redis', '--experts', '--concurrency', '--device', '--threads', '--tls-cert', '--tls-key', '--tls-ca',
    '--metrics-port', '--metrics-host'],
  'shard-map': ['--model', '--nodes', '--replicas', '--memory-per-node', '--out'],
};

/** Ports the deployment assumes (k8s, compose, Dockerfile EXPOSE). */
export const PORTS = {
  http: 8000, // serve --port
  expertGrpc: 50051, // expert-node --port (mTLS)
  expertHealth: 50052, // expert-node --health-port (plaintext gRPC health, kubelet probes)
  metrics: 9464, // expert-node and worker --metrics-port (Prometheus text at /metrics)
};
