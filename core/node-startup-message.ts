// What an expert node tells the parent that spawned it (a local cluster) over
// IPC while it starts: both sides import this one type, so a new field or event
// cannot be added on one side only.
export type NodeStartupMessage =
  /** The gRPC port is bound (port 0 resolved); healthPort when --health-port was given. */
  | { event: 'listening'; port: number; healthPort?: number }
  /** Weights loaded: health is SERVING. */
  | { event: 'serving'; experts: string; weightBytes: number }
  /** Startup failed; the process exits after sending this. */
  | { event: 'failed'; message: string };
