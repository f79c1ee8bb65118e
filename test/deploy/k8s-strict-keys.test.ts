// The strict unknown-key check must catch what the schema validators let through; prove it on
// deliberately broken objects (no kubectl needed).
import { StrictKeyChecker, schemaErrors, type K8sObject } from './k8s-schema';

function statefulSet(container: Record<string, unknown>, extraSpec: Record<string, unknown> = {}): K8sObject {
  return {
    apiVersion: 'apps/v1',
    kind: 'StatefulSet',
    metadata: { name: 'demo', labels: { 'app.kubernetes.io/name': 'demo' }, annotations: { 'any/key': 'x' } },
    spec: {
      serviceName: 'demo',
      replicas: 2,
      selector: { matchLabels: { app: 'demo' } },
      template: {
        metadata: { labels: { app: 'demo' } },
        spec: { containers: [{ name: 'c', image: 'busybox:1.36.1', ...container }] },
      },
      ...extraSpec,
    },
  };
}

const checker = new StrictKeyChecker([['apps/v1', 'StatefulSet'], ['v1', 'Service'], ['networking.k8s.io/v1', 'NetworkPolicy']]);

describe('strict unknown-key check', () => {
  test('a correct object has no unknown keys (labels, annotations, resources are free-form maps)', () => {
    const ok = statefulSet({
      readinessProbe: { grpc: { port: 50052 }, periodSeconds: 5 },
      resources: { limits: { 'nvidia.com/gpu': 1, memory: '1Gi' } },
      env: [{ name: 'X', valueFrom: { fieldRef: { fieldPath: "metadata.labels['apps.kubernetes.io/pod-index']" } } }],
    }, {
      volumeClaimTemplates: [{ metadata: { name: 'data' }, spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '1Gi' } } } }],
    });
    expect(schemaErrors(ok)).toEqual([]);
    expect(checker.unknownKeys(ok)).toEqual([]);
  });

  test('a misspelt readinessProbe passes the schema validator but not the strict check', () => {
    const broken = statefulSet({ readinesProbe: { grpc: { port: 50052 } } });
    expect(schemaErrors(broken)).toEqual([]); // why the strict check exists
    expect(checker.unknownKeys(broken)).toEqual([
      'StatefulSet/demo.spec.template.spec.containers[0].readinesProbe: unknown field (did you mean "readinessProbe"?)',
    ]);
  });

  test('unknown keys are found at every depth: inside arrays, probes, claim templates and metadata', () => {
    const broken = statefulSet({
      ports: [{ containerPot: 8000 }],
      livenessProbe: { grpc: { port: 1, servce: 'x' } },
    }, {
      volumeClaimTemplates: [{ metadata: { name: 'd', lables: {} }, spec: { accesModes: ['ReadWriteOnce'] } }],
      replica: 3,
    });
    const problems = checker.unknownKeys(broken);
    expect(problems).toEqual(expect.arrayContaining([
      expect.stringContaining('.spec.replica: unknown field (did you mean "replicas"?)'),
      expect.stringContaining('.containers[0].ports[0].containerPot: unknown field (did you mean "containerPort"?)'),
      expect.stringContaining('.livenessProbe.grpc.servce: unknown field (did you mean "service"?)'),
      expect.stringContaining('.volumeClaimTemplates[0].metadata.lables: unknown field (did you mean "labels"?)'),
      expect.stringContaining('.volumeClaimTemplates[0].spec.accesModes: unknown field (did you mean "accessModes"?)'),
    ]));
    expect(problems).toHaveLength(5);
  });

  test('works for other kinds: a NetworkPolicy with "ingres" and a Service port with "targetport"', () => {
    const np: K8sObject = { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'n' },
      spec: { podSelector: {}, ingres: [] } };
    const svc: K8sObject = { apiVersion: 'v1', kind: 'Service', metadata: { name: 's' },
      spec: { ports: [{ port: 80, targetport: 8000 }] } };
    expect(checker.unknownKeys(np)).toEqual(['NetworkPolicy/n.spec.ingres: unknown field (did you mean "ingress"?)']);
    expect(checker.unknownKeys(svc)).toEqual(['Service/s.spec.ports[0].targetport: unknown field (did you mean "targetPort"?)']);
  });

  test('the schema validator catches wrong types the strict check leaves to it', () => {
    const broken = statefulSet({ readinessProbe: { periodSeconds: 'often' } });
    expect(schemaErrors(broken).join('\n')).toMatch(/periodSeconds must be integer/);
  });
});
