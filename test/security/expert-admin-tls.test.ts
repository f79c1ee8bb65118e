// LoadExperts / UnloadExperts are behind the node's mTLS like Run: a client with a certificate
// of the CA changes what the node holds; one without a certificate, with another CA's, or in
// plaintext cannot, and the node's pairs stay as they were.
import * as grpc from '@grpc/grpc-js';
import { type ChannelFactory, ExpertClient, insecureChannel, type NodeCallError, tlsChannel } from '../../coordinator/expert-client';
import { loadTlsFiles } from '../../core/tls-files';
import { type NodeProcess, startNodeProcess } from '../cluster/node-process';
import { describeGolden } from '../helpers/golden';
import { haveOpenssl, makeTestCerts, type TestCerts } from './certs';

const describeTls = haveOpenssl ? describeGolden : (name: string, fn: () => void) => {
  // eslint-disable-next-line no-console
  console.warn(`skipping "${name}": openssl not found`);
  describe.skip(name, fn);
};

describeTls('admin calls over mTLS (tiny-a, a real process)', () => {
  let certs: TestCerts;
  let node: NodeProcess;

  beforeAll(async () => {
    certs = makeTestCerts();
    node = await startNodeProcess(['--experts', '0:0', '--no-self-benchmark',
      '--tls-cert', certs.serverCert, '--tls-key', certs.serverKey, '--tls-ca', certs.ca]);
  }, 60_000);
  afterAll(async () => {
    await node?.stop();
    certs?.remove();
  });

  async function attempt(factory: ChannelFactory, change: 'load' | 'unload'): Promise<string> {
    const client = new ExpertClient(`localhost:${node.port}`, factory);
    try {
      const pairs = [{ layer: 1, expert: 1 }];
      const info = await (change === 'load' ? client.loadExperts(pairs, 3_000) : client.unloadExperts(pairs, 3_000));
      return `ok ${info.expertsSpec}`;
    } catch (e) {
      return grpc.status[(e as NodeCallError).code];
    } finally {
      client.close();
    }
  }

  test('only a client with a certificate the CA signed may load or unload', async () => {
    const good = tlsChannel(loadTlsFiles({ tlsCert: certs.clientCert, tlsKey: certs.clientKey, tlsCa: certs.ca }, 'client')!);
    const noCert = tlsChannel(loadTlsFiles({ tlsCa: certs.ca }, 'client')!);
    const otherCa = tlsChannel(loadTlsFiles({ tlsCert: certs.otherClientCert, tlsKey: certs.otherClientKey, tlsCa: certs.ca }, 'client')!);
    for (const [what, factory] of [['no client certificate', noCert], ['another CA', otherCa], ['plaintext', insecureChannel]] as const) {
      expect([what, await attempt(factory, 'load')]).toEqual([what, 'UNAVAILABLE']);
    }
    expect(await attempt(good, 'load')).toBe('ok 0:0,1:1');
    for (const factory of [noCert, otherCa, insecureChannel]) expect(await attempt(factory, 'unload')).toBe('UNAVAILABLE');
    expect(await attempt(good, 'unload')).toBe('ok 0:0');
  }, 60_000);
});
