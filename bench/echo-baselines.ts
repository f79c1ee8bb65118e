// Baselines for the cluster bench's per-layer overhead: the same bytes out and back as a layer's node
// calls, sent by a bare grpc-js bidirectional-stream echo and by a raw TCP echo to another Node process,
// one stream per node, all nodes at once per round (as a layer fans out), one round in flight.
// Nothing in them decodes or computes, so they are what the transport alone costs.
//   node dist/bench/echo-baselines.js --serve   (a child of EchoServer; talks over IPC)
import { fork, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';

/** Bytes of one call to one node: request out, reply back. */
export interface EchoSize {
  out: number;
  back: number;
}

/** Round times of the echo, microseconds. */
export interface EchoResult {
  rounds: number;
  mean_us: number;
  p50_us: number;
  p99_us: number;
}

const identity = (b: Buffer) => b;
/** One method, raw bytes both ways: the request's first 4 bytes (LE) say how many bytes to send back. */
const ECHO_SERVICE: grpc.ServiceDefinition = {
  echo: {
    path: '/bench.Echo/Echo', requestStream: true, responseStream: true, originalName: 'echo',
    requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity,
  },
};

/** Reply buffers by size, made once (the echo measures the transport, not allocation). */
const replies = new Map<number, Buffer>();
function reply(n: number): Buffer {
  let b = replies.get(n);
  if (!b) replies.set(n, (b = Buffer.alloc(n, 7)));
  return b;
}

/** Raw TCP frames: [u32 LE length][u32 LE reply length][payload] out, [u32 LE length][payload] back. */
function serveTcp(socket: net.Socket): void {
  socket.setNoDelay(true);
  let pending: Buffer[] = [];
  let have = 0;
  socket.on('data', (chunk: Buffer) => {
    pending.push(chunk);
    have += chunk.length;
    for (;;) {
      if (have < 8) return;
      let buf = pending.length === 1 ? pending[0] : Buffer.concat(pending);
      const len = buf.readUInt32LE(0);
      if (have < 4 + len) {
        pending = [buf];
        return;
      }
      const back = reply(4 + buf.readUInt32LE(4));
      back.writeUInt32LE(back.length - 4, 0);
      socket.write(back);
      buf = buf.subarray(4 + len);
      pending = buf.length ? [buf] : [];
      have = buf.length;
    }
  });
  socket.on('error', () => socket.destroy());
}

async function serve(): Promise<void> {
  const server = new grpc.Server();
  server.addService(ECHO_SERVICE, {
    echo: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      call.on('data', (b: Buffer) => call.write(reply(b.readUInt32LE(0))));
      call.on('end', () => call.end());
      call.on('error', () => undefined);
    },
  });
  const grpcPort = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, port) => (e ? reject(e) : resolve(port))));
  const tcp = net.createServer(serveTcp);
  await new Promise<void>((resolve) => tcp.listen(0, '127.0.0.1', () => resolve()));
  process.send!({ grpc: `127.0.0.1:${grpcPort}`, tcp: `127.0.0.1:${(tcp.address() as net.AddressInfo).port}` });
  const stop = () => {
    server.forceShutdown();
    tcp.close();
    process.exit(0);
  };
  process.on('disconnect', stop);
  process.on('SIGTERM', stop);
}

/** The echo servers (grpc-js and raw TCP) in a child process. */
export class EchoServer {
  private constructor(private readonly child: ChildProcess, readonly grpcAddress: string, readonly tcpAddress: string) {}

  static async start(): Promise<EchoServer> {
    const execArgv = __filename.endsWith('.ts') ? ['-r', path.resolve(__dirname, '..', 'test', 'cluster', 'ts-register-cached.js')] : [];
    const child = fork(__filename, ['--serve'], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const m = await new Promise<{ grpc: string; tcp: string }>((resolve, reject) => {
      child.once('message', (msg: { grpc: string; tcp: string }) => resolve(msg));
      child.once('exit', (code) => reject(new Error(`echo server exited (${code}) before listening`)));
    });
    return new EchoServer(child, m.grpc, m.tcp);
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.kill('SIGTERM');
    await exited;
  }
}

function summarize(us: number[]): EchoResult {
  const s = [...us].sort((a, b) => a - b);
  const q = (p: number) => (s.length ? s[Math.min(s.length - 1, Math.ceil(p * s.length) - 1)] : 0);
  return { rounds: s.length, mean_us: s.reduce((a, b) => a + b, 0) / Math.max(1, s.length), p50_us: q(0.5), p99_us: q(0.99) };
}

/** Runs `warmup + rounds` rounds; each sends sizes[i] to addresses[i] at once and waits for every reply. */
async function rounds(send: Array<() => Promise<void>>, n: number, warmup: number): Promise<EchoResult> {
  const us: number[] = [];
  for (let r = 0; r < warmup + n; r++) {
    const t0 = process.hrtime.bigint();
    await Promise.all(send.map((f) => f()));
    if (r >= warmup) us.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  return summarize(us);
}

/** A bare grpc-js bidirectional-stream echo: one channel and one stream per address. */
export async function grpcEcho(addresses: string[], sizes: EchoSize[], n: number, warmup = 20): Promise<EchoResult> {
  const Client = grpc.makeGenericClientConstructor(ECHO_SERVICE, 'Echo');
  const clients = addresses.map((a) => new Client(a, grpc.credentials.createInsecure()));
  const streams = clients.map((c) => (c as unknown as { echo: () => grpc.ClientDuplexStream<Buffer, Buffer> }).echo());
  try {
    const send = streams.map((s, i) => {
      const msg = Buffer.alloc(Math.max(4, sizes[i].out), 1);
      msg.writeUInt32LE(sizes[i].back, 0);
      return () => new Promise<void>((resolve, reject) => {
        const fail = (e: Error) => reject(e);
        s.once('error', fail);
        s.once('data', () => {
          s.off('error', fail);
          resolve();
        });
        s.write(msg);
      });
    });
    return await rounds(send, n, warmup);
  } finally {
    for (const s of streams) s.end();
    for (const c of clients) c.close();
  }
}

/** A raw TCP echo: one connection per address, length-prefixed frames (serveTcp). */
export async function tcpEcho(addresses: string[], sizes: EchoSize[], n: number, warmup = 20): Promise<EchoResult> {
  const sockets = await Promise.all(addresses.map((a) => new Promise<net.Socket>((resolve, reject) => {
    const [host, port] = [a.slice(0, a.lastIndexOf(':')), Number(a.slice(a.lastIndexOf(':') + 1))];
    const s = net.connect({ host, port, noDelay: true }, () => resolve(s));
    s.once('error', reject);
  })));
  try {
    const send = sockets.map((s, i) => {
      const msg = Buffer.alloc(8 + Math.max(0, sizes[i].out - 8), 1);
      msg.writeUInt32LE(msg.length - 4, 0);
      msg.writeUInt32LE(sizes[i].back, 4);
      return () => new Promise<void>((resolve, reject) => {
        let got = 0;
        const want = 4 + sizes[i].back;
        const onData = (chunk: Buffer) => {
          got += chunk.length;
          if (got >= want) {
            s.off('data', onData);
            s.off('error', reject);
            resolve();
          }
        };
        s.on('data', onData);
        s.once('error', reject);
        s.write(msg);
      });
    });
    return await rounds(send, n, warmup);
  } finally {
    for (const s of sockets) s.destroy();
  }
}

if (require.main === module && process.argv[2] === '--serve' && process.send) {
  serve().catch((e) => {
    process.stderr.write(`echo server: ${e instanceof Error ? e.stack : e}\n`);
    process.exit(1);
  });
}
