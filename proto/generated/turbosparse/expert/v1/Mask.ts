// Original file: proto/expert.proto


/**
 * A predictor mask over the intermediate neurons, in whichever form is smaller.
 */
export interface Mask {
  /**
   * ceil(I/8) bytes; neuron i = bit (i % 8) of byte (i / 8); bits >= I are zero
   */
  'bits'?: (Buffer | Uint8Array | string);
  /**
   * little-endian uint16 indices of the active neurons (I <= 65536), strictly ascending
   */
  'indices16'?: (Buffer | Uint8Array | string);
  /**
   * little-endian uint32 indices of the active neurons, strictly ascending
   */
  'indices32'?: (Buffer | Uint8Array | string);
  'kind'?: "bits"|"indices16"|"indices32";
}

/**
 * A predictor mask over the intermediate neurons, in whichever form is smaller.
 */
export interface Mask__Output {
  /**
   * ceil(I/8) bytes; neuron i = bit (i % 8) of byte (i / 8); bits >= I are zero
   */
  'bits'?: (Buffer);
  /**
   * little-endian uint16 indices of the active neurons (I <= 65536), strictly ascending
   */
  'indices16'?: (Buffer);
  /**
   * little-endian uint32 indices of the active neurons, strictly ascending
   */
  'indices32'?: (Buffer);
  'kind'?: "bits"|"indices16"|"indices32";
}
