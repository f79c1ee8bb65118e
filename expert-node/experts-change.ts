// The ExpertsChange message of LoadExperts / UnloadExperts, read from its raw
// bytes and checked against the model: every rejection is a WireRejection with
// the status the admin call answers (INVALID_ARGUMENT, naming the entry).
// The size is bounded before protobufjs turns the bytes into objects, so a
// hostile list (millions of entries) costs nothing but this check.
import { status } from '@grpc/grpc-js';
import type { ExpertPair } from '../core/expert-spec';
import { WireRejection } from '../core/wire/expert-messages';
import { expertProto } from '../core/wire/expert-proto';

/** The most bytes one ExpertId entry takes (tag, length, two uint32 fields at 5 varint bytes each with tags). */
const MAX_ENTRY_BYTES = 14;

export interface ModelPairDims {
  numLayers: number;
  numExperts: number;
}

/** The most bytes an ExpertsChange may have: every pair of the model listed twice, plus slack for unknown fields. */
export function maxExpertsChangeBytes(dims: ModelPairDims): number {
  return 2 * dims.numLayers * dims.numExperts * MAX_ENTRY_BYTES + 4096;
}

/** The pairs of an ExpertsChange as sent (duplicates kept; callers dedupe), each checked against the model. */
export function readExpertsChange(bytes: Buffer, dims: ModelPairDims): ExpertPair[] {
  const max = maxExpertsChangeBytes(dims);
  if (bytes.length > max) {
    throw new WireRejection(status.INVALID_ARGUMENT, `ExpertsChange is ${bytes.length} bytes, more than listing every pair of the ` +
      `model (${dims.numLayers} layers x ${dims.numExperts} experts) twice takes (${max}); send at most each pair once`);
  }
  let experts: { layer: number; expert: number }[];
  try {
    experts = expertProto().service.LoadExperts.requestDeserialize(bytes).experts;
  } catch (e) {
    throw new WireRejection(status.INVALID_ARGUMENT, `malformed ExpertsChange: ${(e as Error).message}`);
  }
  return experts.map(({ layer, expert }, i) => {
    if (!(layer < dims.numLayers)) {
      throw new WireRejection(status.INVALID_ARGUMENT, `experts[${i}]: layer ${layer} is out of range (the model has ${dims.numLayers} layers: 0-${dims.numLayers - 1})`);
    }
    if (!(expert < dims.numExperts)) {
      throw new WireRejection(status.INVALID_ARGUMENT, `experts[${i}]: expert ${expert} of layer ${layer} is out of range ` +
        `(the model has ${dims.numExperts} experts per layer: 0-${dims.numExperts - 1})`);
    }
    return { layer, expert };
  });
}
