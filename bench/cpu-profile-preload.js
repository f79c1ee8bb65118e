// CPU profile of every Node process of a bench, where NODE_OPTIONS cannot carry --cpu-prof (Node 20 refuses it):
//   NODE_OPTIONS="--require $PWD/bench/cpu-profile-preload.js" CPU_PROF_DIR=/tmp/prof node dist/bench/cluster.js ...
// Each process writes CPU_PROF_DIR/<script>-<pid>.cpuprofile when it exits (process.exit, end of work, SIGTERM or
// SIGINT handled by the program); a SIGKILLed process writes nothing. Read them with bench/profile-summary.ts.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const inspector = require('node:inspector');

const dir = process.env.CPU_PROF_DIR;
if (dir) {
  fs.mkdirSync(dir, { recursive: true });
  const session = new inspector.Session();
  session.connect();
  // 250 us sampling: a layer call is ~1 ms, so the default 1 ms interval would see too little of it.
  session.post('Profiler.enable');
  session.post('Profiler.setSamplingInterval', { interval: Number(process.env.CPU_PROF_INTERVAL_US || 250) });
  session.post('Profiler.start');
  let written = false;
  const write = () => {
    if (written) return;
    written = true;
    // The main-thread session answers synchronously, so this works inside an 'exit' handler.
    session.post('Profiler.stop', (err, res) => {
      if (err || !res) return;
      const script = path.basename(process.argv[1] || 'node').replace(/\.[jt]s$/, '');
      const role = process.argv.includes('--serve') ? `${script}-serve` : script;
      fs.writeFileSync(path.join(dir, `${role}-${process.pid}.cpuprofile`), JSON.stringify(res.profile));
    });
  };
  process.on('exit', write);
}
