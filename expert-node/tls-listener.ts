// The TLS port of an expert node. grpc-js's own secure server hides its
// handshakes (a refused client certificate is silent), so the node terminates
// TLS itself with node:tls and hands each verified connection to the gRPC
// server through its public connection injector (Server.createConnectionInjector).
// Every refused handshake is logged, naming the peer and the cause, at most
// once per peer address per 10 s.
//
// Client certificates are checked here, after the handshake, not by OpenSSL
// (rejectUnauthorized): node drops a connection whose certificate fails
// verification without any event, so the cause could not be logged.
import net from 'node:net';
import tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { UserError } from '../core/errors';
import { rateLimitedLog } from '../core/rate-limited-log';

/** PEM bytes (core/tls-files.ts): our certificate and key; with `ca`, clients must present a certificate it signed. */
export interface ServerTlsFiles {
  cert: Buffer;
  key: Buffer;
  ca?: Buffer;
}

export interface TlsListener {
  port: number;
  /** Stops accepting connections (those handed to gRPC are the gRPC server's to close). */
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

/** Listens on host:port with TLS, passing verified connections to `server`; port 0 = any free port. */
export function listenTls(server: grpc.Server, host: string, port: number, files: ServerTlsFiles,
  log: (line: string) => void): Promise<TlsListener> {
  const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
  const logRefused = rateLimitedLog(log);
  // Every TCP connection, for destroy() (forceShutdown).
  const sockets = new Set<net.Socket>();
  const tlsServer = tls.createServer({
    cert: files.cert,
    key: files.key,
    ca: files.ca,
    requestCert: files.ca !== undefined,
    rejectUnauthorized: false,
    ALPNProtocols: ['h2'],
    minVersion: 'TLSv1.2',
    // A peer that connects and says nothing must not hold a socket forever.
    handshakeTimeout: 10_000,
  });
  // Each TCP peer as it connected (see refused()).
  const peers = new WeakMap<net.Socket, { address?: string; port?: number }>();
  tlsServer.on('connection', (socket: net.Socket) => {
    peers.set(socket, { address: socket.remoteAddress, port: socket.remotePort });
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
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
  tlsServer.on('secureConnection', (socket: tls.TLSSocket) => {
    // Errors after the handshake (a peer resetting) are the gRPC session's; never an uncaught 'error'.
    socket.on('error', () => undefined);
    if (files.ca !== undefined && !socket.authorized) {
      const cert = socket.getPeerCertificate();
      const none = !cert || Object.keys(cert).length === 0;
      refused(socket, none ? { code: 'NO_CLIENT_CERTIFICATE', message: 'no client certificate' }
        : { code: String(socket.authorizationError), message: `${String(socket.authorizationError)}: certificate "${cert.subject?.CN ?? '?'}" issued by "${cert.issuer?.CN ?? '?'}"` });
      socket.destroy();
      return;
    }
    injector.injectConnection(socket);
  });
  tlsServer.on('tlsClientError', (err: Error & { code?: string }, socket: tls.TLSSocket) => refused(socket, err));
  // The injected sessions belong to `server`: its tryShutdown/forceShutdown closes them.
  const close = () => {
    if (tlsServer.listening) tlsServer.close();
  };
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => reject(new UserError(`--port ${port}: cannot listen on ${host}:${port}: ${err.message}`));
    tlsServer.once('error', onError);
    tlsServer.listen(port, host, () => {
      tlsServer.off('error', onError);
      tlsServer.on('error', (err) => log(`TLS listener: ${err.message}`));
      resolve({
        port: (tlsServer.address() as net.AddressInfo).port,
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
