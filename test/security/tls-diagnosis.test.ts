// The coordinator's reading of a failed connection (which TLS mistakes are permanent, and the
// line it names them in), and the rate limit of the node's refused-connection log lines.
import { diagnoseConnectFailure } from '../../coordinator/tls-diagnosis';
import { rateLimitedLog } from '../../core/rate-limited-log';
import { handshakeFailure } from '../../expert-node/service-listener';

describe('diagnoseConnectFailure', () => {
  const tls = { ca: Buffer.from('ca'), cert: Buffer.from('c'), key: Buffer.from('k') };
  test.each([
    ['wrong version number', tls, 'expert node n1:5: not TLS: the node speaks plaintext, but the coordinator connects with TLS'],
    ['Error [ERR_TLS_CERT_ALTNAME_INVALID]: Hostname/IP does not match certificate\'s altnames: Host: n1. is not in the cert\'s altnames: DNS:n2.',
      tls, 'expert node n1:5: name mismatch: the node\'s certificate does not name "n1" (it names DNS:n2); put an address it names in the shard map'],
    ['self-signed certificate in certificate chain', tls, 'expert node n1:5: unknown CA: the node\'s certificate is not signed by the CA in the coordinator\'s --tls-ca'],
    ['unable to get local issuer certificate', { ca: undefined }, 'unknown CA: the node\'s certificate is not signed by a public CA (no --tls-ca given)'],
    ['tlsv13 alert certificate required', { ca: tls.ca }, 'expert node n1:5: certificate required: the node requires a client certificate'],
    ['tlsv1 alert unknown ca', tls, 'expert node n1:5: unknown CA: the node refused the coordinator\'s client certificate (tlsv1 alert unknown ca)'],
  ])('"%s" is named at once', async (last, creds, message) => {
    expect(await diagnoseConnectFailure('n1:5', last, creds)).toContain(message);
  });

  test('errors retrying may fix are not diagnosed', async () => {
    for (const last of ['connect ECONNREFUSED 127.0.0.1:1', 'getaddrinfo ENOTFOUND n1', '']) {
      expect(await diagnoseConnectFailure('n1:5', last, tls)).toBeNull();
      expect(await diagnoseConnectFailure('n1:5', last, null)).toBeNull();
    }
    // A plaintext channel: only the probe can tell, and nothing listens on port 1.
    expect(await diagnoseConnectFailure('127.0.0.1:1', 'Failed to connect', null)).toBeNull();
  });
});

describe('refused-connection log lines', () => {
  afterEach(() => jest.useRealTimers());

  test('one line per peer per window; the next says how many were held back', () => {
    jest.useFakeTimers({ now: 1_000_000 });
    const lines: string[] = [];
    const log = rateLimitedLog((l) => lines.push(l), 10_000);
    for (let i = 0; i < 5; i++) log('10.0.0.1', `a${i}`);
    log('10.0.0.2', 'b');
    jest.setSystemTime(1_000_000 + 10_001);
    log('10.0.0.1', 'a5');
    expect(lines).toEqual(['a0', 'b', 'a5 (4 more from 10.0.0.1 not logged in the 10 s before)']);
  });

  test('causes in words', () => {
    expect(handshakeFailure({ code: 'ERR_SSL_WRONG_VERSION_NUMBER', message: 'wrong version number' })).toMatch(/^not TLS: the client spoke plaintext/);
    expect(handshakeFailure({ code: 'NO_CLIENT_CERTIFICATE', message: '' })).toMatch(/^certificate required/);
    expect(handshakeFailure({ code: 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', message: 'x' })).toMatch(/^unknown CA/);
    expect(handshakeFailure({ code: 'ECONNRESET', message: 'read ECONNRESET' })).toMatch(/^the client closed the connection during the handshake/);
  });
});
