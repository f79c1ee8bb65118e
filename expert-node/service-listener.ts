// The service port of an expert node, plaintext or TLS. Each connection is handed on by the
// first byte its client sends: HTTP/2 (gRPC: Run, Info, health, admin) goes to the gRPC server
// through its public connection injector (Server.createConnectionInjector); the run socket's
// magic (core/wire/run-frames.ts) goes to `onRunSocket`. One port serves both, so shard maps,
// k8s Services and proxies need nothing new.
//
// TLS: grpc-js's own secure server hides its handshakes (a refused client certificate is silent),
// so the node terminates TLS itself with node:tls. Every refused handshake is logged, naming the
// peer and the cause, at most once per peer address per 10 s. Client certificates are checked
// here, after the handshake, not by OpenSSL (rejectUnauthorized): node drops a connection whose
// certificate fails verification without any event, so the cause could not be logged.
import net from 'node:net';
import tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { UserError } from '../core/errors';
import { rateLimitedLog } from '../core/rate-limited-log';
import { RUN_SOCKET_ALPN, RUN_SOCKET_MAGIC } from '../core/wire/run-frames';

/** PEM bytes (core/tls-files.ts): our certificate and key; with `ca`, clients must present a certificate it signed. */
export interface ServerTlsFiles {
  cert: Buffer;
  key: Buffer;
  ca?: Buffer;
}

export interface ServiceListener {
  port: number;
  /** Stops accepting connections (those handed on are the gRPC server's or the run socket's to close). */
  close(): void;
  /** close(), and drops every connection (handshakes in progress too). */
  destroy(): void;
}

/** A handshake's failure in words an operator can act on. */
export function handshakeFailure(err: { code?: string; message: string }): string {
  const code = err.code ?? '';
  const msg = err.message;
  if (code === 'NO_CLIENT_CERTIFICATE') return CERT_REQUIRED;
  if (/PEER_DID_NOT_RETURN_A_CERTIFICATE|peer did not return a certificate/i.test(code + msg)) return CERT_REQUIRED;
  if (/unknown ca|unable to get (local )?issuer|self[- ]signed|certificate verify failed|unable to verify|ISSUER|SELF_SIGNED|UNABLE_TO_VERIFY/i.test(code + msg)) {
    return `unknown CA: the client's certificate is not signed by this node's --tls-ca (${reason(msg)})`;
  }
  if (/expired|not yet valid/i.test(msg)) return `client certificate rejected: ${reason(msg)}`;
  if (/HTTP_REQUEST|WRONG_VERSION_NUMBER|PACKET_LENGTH_TOO_LONG|UNSUPPORTED_PROTOCOL|http request|wrong version number|packet length too long|unsupported protocol/i.test(code + msg)) {
    return 'not TLS: the client spoke plaintext (give the coordinator --tls-cert, --tls-key and --tls-ca)';
  }
  if (/ECONNRESET|socket hang up|EPIPE/.test(code + msg)) {
    return 'the client closed the connection during the handshake (does it trust the CA of this node\'s --tls-cert, and does the ' +
      'certificate name the address it dials?)';
  }
  if (/timed? ?out/i.test(msg)) return 'the handshake timed out';
  return reason(msg);
}

const CERT_REQUIRED = 'certificate required: the client presented no certificate (give it --tls-cert and --tls-key signed by this node\'s --tls-ca)';

/** OpenSSL's reason text without its codes ("error:0A000412:SSL routines:...:sslv3 alert bad certificate:..."). */
function reason(msg: string): string {
  const ssl = /error:[0-9A-Fa-f]+:[^:]*:[^:]*:([^:]+)/.exec(msg);
  return (ssl ? ssl[1] : msg).trim();
}

/** A connection that says nothing this long after connecting (after its TLS handshake) is closed. */
const FIRST_BYTE_TIMEOUT_MS = 10_000;

/**
 * Listens on host:port (port 0 = any free port), with TLS when `files` is given; gRPC connections go to
 * `server`, run-socket connections to `onRunSocket` (the socket paused, its first bytes unread).
 */
export function listenService(server: grpc.Server, host: string, port: number, files: ServerTlsFiles | undefined,
  onRunSocket: (socket: net.Socket) => void, log: (line: string) => void): Promise<ServiceListener> {
  const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
  // Every TCP connection, for destroy() (forceShutdown).
  const sockets = new Set<net.Socket>();
  const track = (socket: net.Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  };
  const handOn = (socket: net.Socket) => {
    // Errors after this point are the gRPC session's or the run socket's; never an uncaught 'error'.
    socket.on('error', () => undefined);
    const timer = setTimeout(() => socket.destroy(), FIRST_BYTE_TIMEOUT_MS);
    socket.once('close', () => clearTimeout(timer));
    socket.once('data', (chunk: Buffer) => {
      clearTimeout(timer);
      socket.pause();
      socket.unshift(chunk);
      if (chunk[0] === RUN_SOCKET_MAGIC[0]) onRunSocket(socket);
      else injector.injectConnection(socket);
    });
  };
  const listener: net.Server = files ? tlsServer(files, track, handOn, log) : net.createServer((socket) => {
    track(socket);
    handOn(socket);
  });
  const close = () => {
    if (listener.listening) listener.close();
  };
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => reject(new UserError(`--port ${port}: cannot listen on ${host}:${port}: ${err.message}`));
    listener.once('error', onError);
    listener.listen(port, host, () => {
      listener.off('error', onError);
      listener.on('error', (err) => log(`listener: ${err.message}`));
      resolve({
        port: (listener.address() as net.AddressInfo).port,
        close,
        destroy: () => {
          close();
          for (const s of sockets) s.destroy();
          sockets.clear();
        },
      });
    });
  });
}

/** The TLS server: verified connections (client certificate checked when `files.ca`) go to `handOn`. */
function tlsServer(files: ServerTlsFiles, track: (socket: net.Socket) => void, handOn: (socket: net.Socket) => void,
  log: (line: string) => void): tls.Server {
  const logRefused = rateLimitedLog(log);
  const server = tls.createServer({
    cert: files.cert,
    key: files.key,
    ca: files.ca,
    requestCert: files.ca !== undefined,
    rejectUnauthorized: false,
    ALPNProtocols: ['h2', RUN_SOCKET_ALPN],
    minVersion: 'TLSv1.2',
    // A peer that connects and says nothing must not hold a socket forever.
    handshakeTimeout: 10_000,
  });
  // Each TCP peer as it connected (see refused()).
  const peers = new WeakMap<net.Socket, { address?: string; port?: number }>();
  server.on('connection', (socket: net.Socket) => {
    peers.set(socket, { address: socket.remoteAddress, port: socket.remotePort });
    track(socket);
  });
  const refused = (socket: tls.TLSSocket, err: { code?: string; message: string }) => {
    // A peer that reset the connection has left the TLS socket without an address: use the one its
    // TCP socket (node's `_parent`, not a public field; absent, the line says "an unknown address") had.
    const under = peers.get((socket as unknown as { _parent?: net.Socket })._parent ?? socket);
    const peer = socket.remoteAddress ?? under?.address ?? 'an unknown address';
    const port = socket.remotePort ?? under?.port;
    const at = port !== undefined ? `${peer.includes(':') ? `[${peer}]` : peer}:${port}` : peer;
    logRefused(peer, `refused a TLS connection from ${at}: ${handshakeFailure(err)}`);
  };
  server.on('secureConnection', (socket: tls.TLSSocket) => {
    socket.on('error', () => undefined);
    if (files.ca !== undefined && !socket.authorized) {
      const cert = socket.getPeerCertificate();
      const none = !cert || Object.keys(cert).length === 0;
      refused(socket, none ? { code: 'NO_CLIENT_CERTIFICATE', message: 'no client certificate' }
        : { code: String(socket.authorizationError), message: `${String(socket.authorizationError)}: certificate "${cert.subject?.CN ?? '?'}" issued by "${cert.issuer?.CN ?? '?'}"` });
      socket.destroy();
      return;
    }
    handOn(socket);
  });
  server.on('tlsClientError', (err: Error & { code?: string }, socket: tls.TLSSocket) => refused(socket, err));
  return server;
}
