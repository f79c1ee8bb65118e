// Loads proto/expert.proto once for both sides (coordinator client, expert node).
// The loader options must match the `gen:proto` flags in package.json, so the
// generated types in proto/generated/ describe exactly what the loader yields.
import fs from 'node:fs';
import path from 'node:path';
import * as protoLoader from '@grpc/proto-loader';
import type { ExpertRequest, ExpertRequest__Output } from '../../proto/generated/turbosparse/expert/v1/ExpertRequest';
import type { ExpertResponse, ExpertResponse__Output } from '../../proto/generated/turbosparse/expert/v1/ExpertResponse';
import type { InfoRequest, InfoRequest__Output } from '../../proto/generated/turbosparse/expert/v1/InfoRequest';
import type { InfoResponse, InfoResponse__Output } from '../../proto/generated/turbosparse/expert/v1/InfoResponse';
import type { ExpertsChange, ExpertsChange__Output } from '../../proto/generated/turbosparse/expert/v1/ExpertsChange';

export type { ExpertRequest, ExpertRequest__Output, ExpertResponse, ExpertResponse__Output };
export type { InfoRequest, InfoRequest__Output, InfoResponse, InfoResponse__Output };
export type { ExpertsChange, ExpertsChange__Output };
export type { Rows, Rows__Output } from '../../proto/generated/turbosparse/expert/v1/Rows';
export type { Mask, Mask__Output } from '../../proto/generated/turbosparse/expert/v1/Mask';
export type { Route, Route__Output } from '../../proto/generated/turbosparse/expert/v1/Route';
export type { RowEncoding, RowEncoding__Output } from '../../proto/generated/turbosparse/expert/v1/RowEncoding';
export type { ExpertNodeHandlers } from '../../proto/generated/turbosparse/expert/v1/ExpertNode';

/** The fully qualified service name (also the health-check service name). */
export const EXPERT_SERVICE_NAME = 'turbosparse.expert.v1.ExpertNode';

/**
 * The largest message either side sends or accepts (grpc's default receive limit is 4 MiB). A prefill
 * chunk at Mixtral width is 512 rows x 4096 x 4 B = 8 MiB of hidden state plus up to 2 x 512 masks of
 * 1.8 KiB; coordinator and node use the same limit so a batch one side sends the other accepts.
 */
export const EXPERT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024;

/** Same as `gen:proto`: --longs=Number --enums=String --defaults --oneofs. */
export const PROTO_LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

/** A method definition with the message types filled in. */
export type TypedMethod<Req, ReqOut, Res, ResOut> = protoLoader.MethodDefinition<Req, Res, ReqOut, ResOut>;

export interface ExpertServiceDefinition {
  Run: TypedMethod<ExpertRequest, ExpertRequest__Output, ExpertResponse, ExpertResponse__Output>;
  Info: TypedMethod<InfoRequest, InfoRequest__Output, InfoResponse, InfoResponse__Output>;
  LoadExperts: TypedMethod<ExpertsChange, ExpertsChange__Output, InfoResponse, InfoResponse__Output>;
  UnloadExperts: TypedMethod<ExpertsChange, ExpertsChange__Output, InfoResponse, InfoResponse__Output>;
}

export function expertProtoPath(): string {
  // From sources (core/wire) and from the build (dist/core/wire) alike.
  const candidates = [
    path.resolve(__dirname, '..', '..', 'proto', 'expert.proto'),
    path.resolve(__dirname, '..', '..', '..', 'proto', 'expert.proto'),
  ];
  const file = candidates.find((f) => fs.existsSync(f));
  if (!file) throw new Error(`proto/expert.proto not found (looked in ${candidates.join(', ')})`);
  return file;
}

let loaded: { packageDefinition: protoLoader.PackageDefinition; service: ExpertServiceDefinition } | undefined;

/** The package definition (for reflection) and the ExpertNode service definition. */
export function expertProto(): { packageDefinition: protoLoader.PackageDefinition; service: ExpertServiceDefinition } {
  if (!loaded) {
    const packageDefinition = protoLoader.loadSync(expertProtoPath(), PROTO_LOADER_OPTIONS);
    const service = packageDefinition[EXPERT_SERVICE_NAME] as unknown as ExpertServiceDefinition;
    loaded = { packageDefinition, service };
  }
  return loaded;
}
