#!/usr/bin/env node
// A gRPC health check for docker-compose healthchecks (Kubernetes uses its native gRPC probe):
//   node /app/deploy/grpc-health-probe.js HOST:PORT [SERVICE] [--timeout-ms N]
// Asks grpc.health.v1.Health/Check over plaintext (the expert node's --health-port) and exits
// 0 when the answer is SERVING, 1 otherwise (NOT_SERVING, unknown service, no answer in time).
'use strict';
const grpc = require('@grpc/grpc-js');
const { service } = require('grpc-health-check');

function main(argv) {
  const args = argv.slice(2);
  let timeoutMs = 3000;
  const i = args.indexOf('--timeout-ms');
  if (i >= 0) {
    timeoutMs = Number(args[i + 1]);
    args.splice(i, 2);
  }
  const [target, serviceName = ''] = args;
  if (!target || !/^[^\s:]+:\d+$/.test(target) || !(timeoutMs > 0)) {
    process.stderr.write('usage: grpc-health-probe.js HOST:PORT [SERVICE] [--timeout-ms N]\n');
    process.exit(2);
  }
  const Client = grpc.makeGenericClientConstructor(service, 'Health');
  const client = new Client(target, grpc.credentials.createInsecure());
  client.check({ service: serviceName }, { deadline: Date.now() + timeoutMs }, (err, res) => {
    client.close();
    if (err) {
      process.stderr.write(`${target}: ${err.details || err.message}\n`);
      process.exit(1);
    }
    process.stdout.write(`${target}: ${res.status}\n`);
    process.exit(res.status === 'SERVING' ? 0 : 1);
  });
}

main(process.argv);
