// Tracing configuration from the standard OpenTelemetry environment variables
// (https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/),
// validated once so a typo is one clear line instead of silently no traces.
//
// Off unless asked for: OTEL_TRACES_EXPORTER unset and no OTLP endpoint set ->
// no provider, no wrappers, no cost on the token path.
import { UserError } from '../errors';

export type TraceExporterKind = 'otlp' | 'console' | 'jsonl';
export type OtlpProtocol = 'grpc' | 'http/protobuf' | 'http/json';
export type SamplerKind =
  | 'always_on'
  | 'always_off'
  | 'traceidratio'
  | 'parentbased_always_on'
  | 'parentbased_always_off'
  | 'parentbased_traceidratio';

export interface TraceConfig {
  /** Empty: tracing off. */
  exporters: TraceExporterKind[];
  protocol: OtlpProtocol;
  /** For `jsonl`: the file spans are appended to (TURBOSPARSE_TRACES_FILE). */
  jsonlFile?: string;
  sampler: SamplerKind;
  samplerArg: number;
  /** OTEL_SERVICE_NAME, when set (wins over the service's own name). */
  serviceName?: string;
  /** OTEL_RESOURCE_ATTRIBUTES, parsed. */
  resourceAttributes: Record<string, string>;
}

const EXPORTERS = ['otlp', 'console', 'jsonl', 'none'] as const;
const PROTOCOLS: OtlpProtocol[] = ['grpc', 'http/protobuf', 'http/json'];
const SAMPLERS: SamplerKind[] = [
  'always_on',
  'always_off',
  'traceidratio',
  'parentbased_always_on',
  'parentbased_always_off',
  'parentbased_traceidratio',
];

function nonEmpty(v: string | undefined): string | undefined {
  const t = v?.trim();
  return t ? t : undefined;
}

/** `key1=value1,key2=value2`, values percent-encoded (W3C Baggage octets). */
export function parseResourceAttributes(raw: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!nonEmpty(raw)) return out;
  for (const part of raw!.split(',')) {
    if (!part.trim()) continue;
    const eq = part.indexOf('=');
    if (eq <= 0) {
      throw new UserError(`OTEL_RESOURCE_ATTRIBUTES: "${part.trim()}" is not key=value; use e.g. deployment.environment=prod,k8s.pod.name=node-0`);
    }
    const key = part.slice(0, eq).trim();
    let value = part.slice(eq + 1).trim();
    try {
      value = decodeURIComponent(value);
    } catch {
      throw new UserError(`OTEL_RESOURCE_ATTRIBUTES: the value of ${key} is not valid percent-encoding`);
    }
    out[key] = value;
  }
  return out;
}

export function traceConfigFromEnv(env: NodeJS.ProcessEnv = process.env): TraceConfig {
  const disabled = nonEmpty(env.OTEL_SDK_DISABLED)?.toLowerCase() === 'true';
  const endpoint = nonEmpty(env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) ?? nonEmpty(env.OTEL_EXPORTER_OTLP_ENDPOINT);
  const rawExporters = nonEmpty(env.OTEL_TRACES_EXPORTER);
  let exporters: TraceExporterKind[] = [];
  if (!disabled) {
    const names = rawExporters ? rawExporters.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean) : endpoint ? ['otlp'] : [];
    for (const n of names) {
      if (!(EXPORTERS as readonly string[]).includes(n)) {
        throw new UserError(`OTEL_TRACES_EXPORTER: unknown exporter "${n}"; use otlp, console, jsonl or none (comma-separated)`);
      }
    }
    exporters = names.includes('none') ? [] : ([...new Set(names)] as TraceExporterKind[]);
  }

  const rawProtocol = nonEmpty(env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL) ?? nonEmpty(env.OTEL_EXPORTER_OTLP_PROTOCOL) ?? 'http/protobuf';
  if (!PROTOCOLS.includes(rawProtocol as OtlpProtocol)) {
    throw new UserError(`OTEL_EXPORTER_OTLP_PROTOCOL: "${rawProtocol}" is not supported; use grpc, http/protobuf or http/json`);
  }

  const jsonlFile = nonEmpty(env.TURBOSPARSE_TRACES_FILE);
  if (exporters.includes('jsonl') && !jsonlFile) {
    throw new UserError('OTEL_TRACES_EXPORTER=jsonl needs TURBOSPARSE_TRACES_FILE=PATH (the file spans are appended to)');
  }

  const rawSampler = (nonEmpty(env.OTEL_TRACES_SAMPLER) ?? 'parentbased_always_on').toLowerCase();
  if (!SAMPLERS.includes(rawSampler as SamplerKind)) {
    throw new UserError(`OTEL_TRACES_SAMPLER: "${rawSampler}" is not supported; use one of ${SAMPLERS.join(', ')}`);
  }
  let samplerArg = 1;
  const rawArg = nonEmpty(env.OTEL_TRACES_SAMPLER_ARG);
  if (rawArg !== undefined && rawSampler.endsWith('traceidratio')) {
    samplerArg = Number(rawArg);
    if (!Number.isFinite(samplerArg) || samplerArg < 0 || samplerArg > 1) {
      throw new UserError(`OTEL_TRACES_SAMPLER_ARG: "${rawArg}" must be a ratio in [0, 1], e.g. 0.1`);
    }
  }

  return {
    exporters,
    protocol: rawProtocol as OtlpProtocol,
    jsonlFile,
    sampler: rawSampler as SamplerKind,
    samplerArg,
    serviceName: nonEmpty(env.OTEL_SERVICE_NAME),
    resourceAttributes: parseResourceAttributes(env.OTEL_RESOURCE_ATTRIBUTES),
  };
}
