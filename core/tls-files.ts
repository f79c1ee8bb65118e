// The PEM files of mutual TLS between coordinators/workers and expert nodes
// (`--tls-cert`, `--tls-key`, `--tls-ca` on both sides). Read and checked here,
// once, so that a wrong path or a key that does not match its certificate is
// one line naming the flag and the file, before anything else starts; the
// gRPC credentials are built from the bytes by each side (core/ has no gRPC).
import fs from 'node:fs';
import tls from 'node:tls';
import { UserError } from './errors';

export interface TlsFlags {
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
}

export interface TlsFiles {
  /** Our certificate chain and its private key (absent: we present none). */
  cert?: Buffer;
  key?: Buffer;
  /** CA certificates that must have signed the peer (absent: the system's public roots). */
  ca?: Buffer;
  /** The paths, for log lines. */
  paths: TlsFlags;
}

function readPem(flag: string, file: string, label: RegExp, what: string): Buffer {
  let data: Buffer;
  try {
    data = fs.readFileSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'is a directory' : code ?? String(e);
    throw new UserError(`${flag} ${file}: cannot read it (${why})`);
  }
  if (!label.test(data.toString('latin1'))) {
    throw new UserError(`${flag} ${file}: not a PEM ${what} (expected a "-----BEGIN ...-----" block)`);
  }
  return data;
}

/**
 * Reads the files the flags name; undefined when no flag is given (plaintext).
 * `role` says which combinations make sense: a server needs a certificate and
 * a key (with --tls-ca it also requires and checks client certificates); a
 * client may give only --tls-ca (verify the server, present no certificate).
 */
export function loadTlsFiles(flags: TlsFlags, role: 'server' | 'client'): TlsFiles | undefined {
  const { tlsCert, tlsKey, tlsCa } = flags;
  if (tlsCert === undefined && tlsKey === undefined && tlsCa === undefined) return undefined;
  if ((tlsCert === undefined) !== (tlsKey === undefined)) {
    throw new UserError(tlsCert === undefined
      ? `--tls-key ${tlsKey} needs --tls-cert FILE (the certificate that goes with the key)`
      : `--tls-cert ${tlsCert} needs --tls-key FILE (the certificate's private key)`);
  }
  if (role === 'server' && tlsCert === undefined) {
    throw new UserError(`--tls-ca ${tlsCa} needs --tls-cert FILE and --tls-key FILE (the expert node's own certificate)`);
  }
  const files: TlsFiles = { paths: { tlsCert, tlsKey, tlsCa } };
  if (tlsCert !== undefined) files.cert = readPem('--tls-cert', tlsCert, /-----BEGIN CERTIFICATE-----/, 'certificate');
  if (tlsKey !== undefined) files.key = readPem('--tls-key', tlsKey, /-----BEGIN [A-Z ]*PRIVATE KEY-----/, 'private key');
  if (tlsCa !== undefined) files.ca = readPem('--tls-ca', tlsCa, /-----BEGIN CERTIFICATE-----/, 'CA certificate');
  // OpenSSL's own parse: a corrupt block or a key of another certificate is caught here.
  if (files.cert) {
    try {
      tls.createSecureContext({ cert: files.cert, key: files.key });
    } catch (e) {
      const msg = (e as Error).message;
      throw new UserError(/mismatch/i.test(msg)
        ? `--tls-key ${tlsKey} is not the private key of --tls-cert ${tlsCert}`
        : `--tls-cert ${tlsCert} / --tls-key ${tlsKey}: cannot use them (${msg})`);
    }
  }
  if (files.ca) {
    try {
      tls.createSecureContext({ ca: files.ca });
    } catch (e) {
      throw new UserError(`--tls-ca ${tlsCa}: not a usable CA certificate (${(e as Error).message})`);
    }
  }
  return files;
}

/** True for addresses that never leave this machine (127.0.0.0/8, ::1, localhost). */
export function isLoopbackAddress(address: string): boolean {
  const m = /^\[([^\]]+)\](?::\d+)?$/.exec(address) ?? /^([^:]+)(?::\d+)?$/.exec(address);
  const host = (m ? m[1] : address).toLowerCase();
  return host === 'localhost' || host.endsWith('.localhost') || /^127\.\d+\.\d+\.\d+$/.test(host) ||
    host === '::1' || host === '0:0:0:0:0:0:0:1' || host === '::ffff:127.0.0.1';
}
