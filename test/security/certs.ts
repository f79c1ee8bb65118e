// Certificates for the TLS tests, made with the `openssl` command in a temp dir:
// a CA, a server certificate for 127.0.0.1/localhost, one of the same CA that
// names only another host, a client certificate, and an unrelated second CA
// with its own client certificate.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const haveOpenssl = (() => {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

export interface TestCerts {
  dir: string;
  ca: string;
  serverCert: string;
  serverKey: string;
  /** Signed by the CA, but names only wrong.example (not localhost or 127.0.0.1). */
  wrongNameCert: string;
  wrongNameKey: string;
  clientCert: string;
  clientKey: string;
  otherCa: string;
  otherClientCert: string;
  otherClientKey: string;
  /** Removes the temp dir. */
  remove(): void;
}

function openssl(dir: string, ...args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

function makeCa(dir: string, name: string): void {
  openssl(dir, 'genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', `${name}.key`);
  fs.writeFileSync(path.join(dir, `${name}.cnf`), [
    '[req]', 'distinguished_name = dn', 'prompt = no', 'x509_extensions = ca',
    '[dn]', `CN = ${name}`,
    '[ca]', 'basicConstraints = critical, CA:TRUE, pathlen:0', 'keyUsage = critical, keyCertSign, cRLSign', 'subjectKeyIdentifier = hash',
  ].join('\n'));
  openssl(dir, 'req', '-x509', '-new', '-key', `${name}.key`, '-config', `${name}.cnf`, '-days', '2', '-out', `${name}.crt`);
}

function sign(dir: string, ca: string, name: string, eku: string, sans?: string): void {
  openssl(dir, 'genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', `${name}.key`);
  openssl(dir, 'req', '-new', '-key', `${name}.key`, '-subj', `/CN=${name}`, '-out', `${name}.csr`);
  fs.writeFileSync(path.join(dir, `${name}.ext`), [
    'basicConstraints = critical, CA:FALSE',
    'keyUsage = critical, digitalSignature',
    `extendedKeyUsage = ${eku}`,
    ...(sans ? [`subjectAltName = ${sans}`] : []),
  ].join('\n'));
  openssl(dir, 'x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.crt`, '-CAkey', `${ca}.key`, '-set_serial', String(Date.now()),
    '-days', '2', '-extfile', `${name}.ext`, '-out', `${name}.crt`);
}

export function makeTestCerts(): TestCerts {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-tls-'));
  makeCa(dir, 'ca');
  sign(dir, 'ca', 'server', 'serverAuth', 'DNS:localhost,IP:127.0.0.1');
  sign(dir, 'ca', 'wrong-name', 'serverAuth', 'DNS:wrong.example');
  sign(dir, 'ca', 'client', 'clientAuth');
  makeCa(dir, 'other-ca');
  sign(dir, 'other-ca', 'other-client', 'clientAuth');
  const p = (f: string) => path.join(dir, f);
  return {
    dir, ca: p('ca.crt'), serverCert: p('server.crt'), serverKey: p('server.key'),
    wrongNameCert: p('wrong-name.crt'), wrongNameKey: p('wrong-name.key'), clientCert: p('client.crt'), clientKey: p('client.key'),
    otherCa: p('other-ca.crt'), otherClientCert: p('other-client.crt'), otherClientKey: p('other-client.key'),
    remove: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}
