// Process and Node.js runtime metrics, under the names Prometheus client libraries use
// (process_* and nodejs_*), so stock dashboards and alerts work: CPU, memory, open file
// descriptors, start time, heap, and event-loop lag. The coordinator and the expert nodes
// register them on the registry their /metrics serves; the values are read at scrape time.
import fs from 'node:fs';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import type { Registry } from './metrics';

/** Event-loop delay, sampled every 10 ms; one per process (it is not tied to a registry). */
let loopDelay: IntervalHistogram | null = null;
const registered = new WeakSet<Registry>();

/** Registers the process_* and nodejs_* metrics on `reg` (once per registry). */
export function registerRuntimeMetrics(reg: Registry): void {
  if (registered.has(reg)) return;
  registered.add(reg);
  if (!loopDelay) {
    loopDelay = monitorEventLoopDelay({ resolution: 10 });
    loopDelay.enable();
  }
  const delay = loopDelay;

  const cpuUser = reg.counter({ name: 'process_cpu_user_seconds_total', help: 'User CPU time spent by the process, in seconds' });
  const cpuSystem = reg.counter({ name: 'process_cpu_system_seconds_total', help: 'System CPU time spent by the process, in seconds' });
  const cpuTotal = reg.counter({ name: 'process_cpu_seconds_total', help: 'User and system CPU time spent by the process, in seconds' });
  const gauge = (name: string, help: string) => reg.gauge({ name, help });
  const start = gauge('process_start_time_seconds', 'Start time of the process since the Unix epoch, in seconds');
  const rss = gauge('process_resident_memory_bytes', 'Resident memory size, in bytes');
  const openFds = fs.existsSync('/proc/self/fd') ? gauge('process_open_fds', 'Open file descriptors') : null;
  const maxFds = fs.existsSync('/proc/self/limits') ? gauge('process_max_fds', 'Maximum number of open file descriptors') : null;
  const heapTotal = gauge('nodejs_heap_size_total_bytes', 'V8 heap size, in bytes');
  const heapUsed = gauge('nodejs_heap_size_used_bytes', 'V8 heap in use, in bytes');
  const external = gauge('nodejs_external_memory_bytes', 'Memory of C++ objects bound to JavaScript objects (buffers, the addon\'s tensors), in bytes');
  const lagMean = gauge('nodejs_eventloop_lag_seconds', 'Mean event-loop delay since the last scrape, in seconds (work on the JS thread delays every request and expert call)');
  const lagP99 = gauge('nodejs_eventloop_lag_p99_seconds', '99th percentile of the event-loop delay since the last scrape, in seconds');
  const lagMax = gauge('nodejs_eventloop_lag_max_seconds', 'Largest event-loop delay since the last scrape, in seconds');
  const version = reg.gauge({ name: 'nodejs_version_info', help: 'Node.js version', labelNames: ['version'] });
  version.set({ version: process.version }, 1);
  start.set(undefined, Math.round((Date.now() - process.uptime() * 1000) / 1000));

  reg.onCollect(() => {
    const cpu = process.cpuUsage();
    // Counters read from the kernel: set, not incremented (they only grow).
    cpuUser.labels().value = cpu.user / 1e6;
    cpuSystem.labels().value = cpu.system / 1e6;
    cpuTotal.labels().value = (cpu.user + cpu.system) / 1e6;
    const mem = process.memoryUsage();
    rss.set(undefined, mem.rss);
    heapTotal.set(undefined, mem.heapTotal);
    heapUsed.set(undefined, mem.heapUsed);
    external.set(undefined, mem.external);
    if (openFds) openFds.set(undefined, Math.max(0, fs.readdirSync('/proc/self/fd').length - 1)); // less the one readdir opened
    if (maxFds) {
      const m = /^Max open files\s+(\d+|unlimited)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'));
      if (m && m[1] !== 'unlimited') maxFds.set(undefined, Number(m[1]));
    }
    // The histogram is in nanoseconds; no sample yet (a scrape right after start) reads as 0.
    const n = delay.count > 0;
    lagMean.set(undefined, n ? delay.mean / 1e9 : 0);
    lagP99.set(undefined, n ? delay.percentile(99) / 1e9 : 0);
    lagMax.set(undefined, n ? delay.max / 1e9 : 0);
    delay.reset();
  });
}
