// A node address as host and port ("host:port", "[v6]:port"), for the connections the coordinator opens itself
// (the run socket, the TLS diagnosis probe) rather than through grpc-js.

/** host and port of "host:port" / "[v6]:port"; null for anything else (a gRPC target scheme, a port out of range). */
export function hostPort(address: string): { host: string; port: number } | null {
  const m = /^(?:\[([^\]]+)\]|([^:[\]/]+)):(\d{1,5})$/.exec(address);
  if (!m) return null;
  const port = Number(m[3]);
  return port > 0 && port < 65536 ? { host: m[1] ?? m[2], port } : null;
}
