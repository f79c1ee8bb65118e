#!/usr/bin/env node
// Gives the nodes of a shard map the names and addresses they have in a deployment, by position:
//   node deploy/shard-map-addresses.js IN OUT --name TEMPLATE --address TEMPLATE
// TEMPLATE may use {i} (the entry's index) and {name}; e.g. in Kubernetes
//   --name 'turbosparse-expert-{i}' --address '{name}.turbosparse-expert:50051'
// (entry i is served by StatefulSet pod i). `turbosparse shard-map` decides which experts each
// node holds; this only fills in where that node lives. IN is YAML or JSON; OUT is YAML, or
// JSON when it ends in .json.
'use strict';
const fs = require('node:fs');
const YAML = require('yaml');

function fail(message) {
  process.stderr.write(`shard-map-addresses: ${message}\n`);
  process.exit(2);
}

function fill(template, vars) {
  return template.replace(/\{(i|name)\}/g, (_, key) => String(vars[key]));
}

function main(argv) {
  const args = argv.slice(2);
  const opts = {};
  const files = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--name' || args[i] === '--address') opts[args[i].slice(2)] = args[++i];
    else files.push(args[i]);
  }
  if (files.length !== 2 || !opts.name || !opts.address) {
    fail('usage: shard-map-addresses.js IN OUT --name TEMPLATE --address TEMPLATE');
  }
  const [input, output] = files;
  let doc;
  try {
    doc = YAML.parse(fs.readFileSync(input, 'utf8'));
  } catch (e) {
    fail(`${input}: ${e.message.split('\n')[0]}`);
  }
  if (!doc || !Array.isArray(doc.nodes) || doc.nodes.length === 0) {
    fail(`${input}: expected a shard map ({ nodes: [ { address, experts } ] })`);
  }
  const nodes = doc.nodes.map((node, i) => {
    if (!node || node.experts === undefined) fail(`${input}: nodes.${i} has no experts`);
    const name = fill(opts.name, { i, name: '' });
    return { name, address: fill(opts.address, { i, name }), experts: node.experts };
  });
  const out = { nodes };
  const text = output.endsWith('.json') ? `${JSON.stringify(out, null, 2)}\n` : YAML.stringify(out);
  fs.writeFileSync(output, text);
  process.stdout.write(`${output}: ${nodes.length} nodes (${nodes[0].address} .. ${nodes[nodes.length - 1].address})\n`);
}

main(process.argv);
