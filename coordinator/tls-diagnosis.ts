// Why a coordinator cannot connect to an expert node, when the reason is a TLS
// mistake that retrying will not fix: plaintext against TLS (or the reverse),
// a node certificate that another CA signed or that does not name the host,
// a client certificate the node refuses or none where one is required.
// grpc-js reports some of these only as "Failed to connect" (the node closes
// the connection after a TLS 1.3 handshake that looked complete to us), so
// then one probe connection with node:tls, using the same certificates, tells
// which it is. Returns one line naming the address, the cause and the flag to
// fix; null for anything else (a node still starting is retried as before).
import net from 'node:net';
import tls from 'node:tls';
import { hostPort } from '../core/host-port';

/** What the channel's credentials were made of (PEM bytes); null for a plaintext channel. */
export interface ChannelTls {
  cert?: Buffer;
  key?: Buffer;
  ca?: Buffer;
}

type Probe =
  | { kind: 'accepted' } // the node spoke HTTP/2 after the handshake
  | { kind: 'closed' } // the handshake completed, then the node closed: it refused us
  | { kind: 'error'; message: string; afterHandshake: boolean }
  | { kind: 'timeout' };

const NOT_TLS = /wrong version number|packet length too long|unknown protocol|record layer failure|http request/i;
const NAME_MISMATCH = /ALTNAME_INVALID|does not match certificate/i;
const UNTRUSTED = /self[- ]signed|unable to get (local )?issuer|unable to verify|certificate verify failed|SELF_SIGNED|ISSUER_CERT|UNABLE_TO_VERIFY/i;
const EXPIRED = /certificate (has )?expired|not yet valid|CERT_HAS_EXPIRED|CERT_NOT_YET_VALID/i;
const CERT_REQUIRED = /alert certificate required/i;
const CERT_REFUSED = /alert (unknown ca|bad certificate|certificate unknown|unsupported certificate|certificate revoked|certificate expired|access denied)/i;
const CLOSED = /Failed to connect|Socket closed|Connection closed|ECONNRESET|socket hang up/i;

/** One TLS connection to the node with our certificates, as grpc-js would make it, but not verifying the node. */
function probe(host: string, port: number, creds: ChannelTls, timeoutMs: number): Promise<Probe> {
  return new Promise((resolve) => {
    let handshaken = false;
    const socket = tls.connect({
      host, port, ca: creds.ca, cert: creds.cert, key: creds.key, ALPNProtocols: ['h2'], rejectUnauthorized: false,
      servername: net.isIP(host) ? undefined : host,
    });
    const done = (p: Probe) => {
      clearTimeout(timer);
      socket.removeAllListeners();
      socket.on('error', () => undefined);
      socket.destroy();
      resolve(p);
    };
    const timer = setTimeout(() => done({ kind: 'timeout' }), timeoutMs);
    socket.on('secureConnect', () => (handshaken = true));
    socket.on('data', () => done({ kind: 'accepted' }));
    socket.on('error', (e) => done({ kind: 'error', message: e.message, afterHandshake: handshaken }));
    socket.on('close', () => done(handshaken ? { kind: 'closed' } : { kind: 'error', message: 'closed during the handshake', afterHandshake: false }));
  });
}

/** The cause in a TLS error, by what grpc-js or node:tls said; null when it is none of the permanent ones. */
function fromMessage(node: string, host: string, message: string, creds: ChannelTls): string | null {
  if (NOT_TLS.test(message)) {
    return `${node}: not TLS: the node speaks plaintext, but the coordinator connects with TLS; start the node with ` +
      '--tls-cert, --tls-key and --tls-ca, or give the coordinator no --tls-* flags';
  }
  if (NAME_MISMATCH.test(message)) {
    const names = /cert's altnames: (.*?)\.?$/.exec(message)?.[1] ?? /cert's CN: (.*?)\.?$/.exec(message)?.[1];
    return `${node}: name mismatch: the node's certificate does not name "${host}"${names ? ` (it names ${names})` : ''}; put an ` +
      `address it names in the shard map, or reissue the node's --tls-cert with "${host}" in its subjectAltName`;
  }
  if (EXPIRED.test(message)) return `${node}: the node's certificate is not valid now (${message.trim()}); renew the node's --tls-cert`;
  if (UNTRUSTED.test(message)) {
    return `${node}: unknown CA: the node's certificate is not signed by ${creds.ca ? 'the CA in the coordinator\'s --tls-ca' : 'a public CA (no --tls-ca given)'} ` +
      `(${message.trim()}); give the coordinator --tls-ca with the CA that signed the node's --tls-cert`;
  }
  if (CERT_REQUIRED.test(message)) return certificateRequired(node);
  if (CERT_REFUSED.test(message)) return certificateRefused(node, message);
  return null;
}

function certificateRequired(node: string): string {
  return `${node}: certificate required: the node requires a client certificate and the coordinator presented none; give the ` +
    'coordinator --tls-cert and --tls-key signed by the CA in the node\'s --tls-ca';
}

function certificateRefused(node: string, why?: string): string {
  return `${node}: unknown CA: the node refused the coordinator's client certificate${why ? ` (${why.trim()})` : ''}; give the ` +
    'coordinator a --tls-cert signed by the CA in the node\'s --tls-ca (the node\'s log names the cause)';
}

/**
 * The permanent TLS cause of a failed connection to `address`, given grpc-js's
 * last connection error (lastConnectError) and the channel's TLS (null:
 * plaintext); null when it is not one (refused, unreachable, still starting).
 */
export async function diagnoseConnectFailure(address: string, lastError: string, creds: ChannelTls | null,
  probeTimeoutMs = 2_000): Promise<string | null> {
  const hp = hostPort(address);
  if (!hp || !lastError) return null;
  const node = `expert node ${address}`;
  if (creds) {
    const direct = fromMessage(node, hp.host, lastError, creds);
    if (direct || !CLOSED.test(lastError)) return direct;
    const p = await probe(hp.host, hp.port, creds, probeTimeoutMs);
    if (p.kind === 'closed') return creds.cert ? certificateRefused(node) : certificateRequired(node);
    if (p.kind === 'error') return fromMessage(node, hp.host, p.message, creds);
    return null;
  }
  if (!CLOSED.test(lastError)) return null;
  // Plaintext: does the node answer a TLS handshake? (It may then refuse us for having no certificate.)
  const p = await probe(hp.host, hp.port, {}, probeTimeoutMs);
  const speaksTls = p.kind === 'accepted' || p.kind === 'closed' || (p.kind === 'error' && (p.afterHandshake || /alert/i.test(p.message)));
  return speaksTls
    ? `${node}: TLS required: the node speaks TLS, but the coordinator connects in plaintext; give the coordinator --tls-ca (the CA that signed the ` +
      'node\'s certificate), and --tls-cert and --tls-key when the node requires client certificates (its --tls-ca)'
    : null;
}
