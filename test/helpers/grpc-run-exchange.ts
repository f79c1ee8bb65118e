// A Run stream exchange for the node fuzz tests: `messages` then a valid request (id `validId`) on a new
// gRPC Run stream; resolves with every response once that one is answered or the stream ends with a status.
import * as grpc from '@grpc/grpc-js';
import { expertProto, type ExpertResponse__Output } from '../../core/wire/expert-proto';

export interface RunExchange {
  responses: ExpertResponse__Output[];
  /** The stream's final status when it failed. */
  status?: grpc.StatusObject;
}

export function grpcRunExchange(client: grpc.Client, messages: Buffer[], valid: Buffer, validId: number, timeoutMs: number): Promise<RunExchange> {
  const Run = expertProto().service.Run;
  return new Promise((resolve, reject) => {
    const out: RunExchange = { responses: [] };
    const call = client.makeBidiStreamRequest<Buffer, ExpertResponse__Output>(Run.path, (b) => b, (b) => Run.responseDeserialize(b));
    const timer = setTimeout(() => {
      call.cancel();
      reject(new Error(`no answer within ${timeoutMs} ms (responses: ${JSON.stringify(out.responses.map((r) => [r.id, r.error]))})`));
    }, timeoutMs);
    const done = () => {
      clearTimeout(timer);
      call.removeAllListeners();
      call.on('error', () => undefined);
      call.cancel();
      resolve(out);
    };
    call.on('data', (r: ExpertResponse__Output) => {
      out.responses.push(r);
      if (Number(r.id) === validId) done();
    });
    call.on('status', (s: grpc.StatusObject) => {
      if (s.code !== grpc.status.OK) out.status = s;
      done();
    });
    call.on('error', () => undefined);
    for (const m of messages) call.write(m);
    call.write(valid);
  });
}
