// Wire codecs: rows (f32 / bf16 / int8) and masks (bits / indices), both directions.
import { maskBytes } from '../../core/native';
import { expertProto } from '../../core/wire/expert-proto';
import { decodeMaskInto, encodeMask, maskPopcount, maskWireBytes } from '../../core/wire/masks';
import { bf16ToF32, decodeRows, encodeRows, f32ToBf16, rowWireBytes } from '../../core/wire/rows';
import type { Rows__Output, Mask__Output } from '../../core/wire/expert-proto';
import { rng } from './helpers';

function randomRows(n: number, width: number, seed: number): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n * width }, () => (r() - 0.5) * 8);
}

/** Through the real protobuf encoding, as a node would receive it. */
function viaProto(rows: ReturnType<typeof encodeRows>): Rows__Output {
  const m = expertProto().service.Run;
  const bytes = m.requestSerialize({ id: 1, layer: 0, hidden: rows, routes: [] });
  return m.requestDeserialize(bytes).hidden!;
}

function viaProtoMask(mask: ReturnType<typeof encodeMask>): Mask__Output {
  const m = expertProto().service.Run;
  const bytes = m.requestSerialize({ id: 1, routes: [{ row: 0, expert: 0, weight: 1, mask }] });
  return m.requestDeserialize(bytes).routes[0].mask!;
}

describe('row codecs', () => {
  const width = 37;
  const src = randomRows(5, width, 1);

  test('f32 is bit-exact, including a subset of rows in a given order', () => {
    const enc = encodeRows(src, width, [4, 0, 2], 'f32');
    expect(enc.data!.length).toBe(3 * width * 4);
    const dec = decodeRows(viaProto(enc), 3, width, 'hidden');
    expect(dec).toEqual(Float32Array.from([...src.subarray(4 * width, 5 * width), ...src.subarray(0, width), ...src.subarray(2 * width, 3 * width)]));
  });

  test('bf16 rounds to nearest even and keeps 8 bits of mantissa', () => {
    expect(f32ToBf16(1)).toBe(0x3f80);
    // 1 + 2^-8 is exactly halfway between two bf16 values: ties to even (down); a bit more rounds up.
    expect(bf16ToF32(f32ToBf16(1 + 2 ** -8))).toBe(1);
    expect(bf16ToF32(f32ToBf16(1 + 2 ** -8 + 2 ** -12))).toBe(1 + 2 ** -7);
    expect(Number.isNaN(bf16ToF32(f32ToBf16(NaN)))).toBe(true);
    expect(bf16ToF32(f32ToBf16(-Infinity))).toBe(-Infinity);
    const dec = decodeRows(viaProto(encodeRows(src, width, null, 'bf16')), 5, width, 'hidden');
    for (let i = 0; i < src.length; i++) expect(Math.abs(dec[i] - src[i])).toBeLessThanOrEqual(Math.abs(src[i]) * 2 ** -8);
  });

  test('int8 with one scale per row stays within half a step of the row maximum / 127', () => {
    const rows = Float32Array.from(src);
    rows.fill(0, width, 2 * width); // an all-zero row gets scale 0 and decodes to zeros
    const enc = encodeRows(rows, width, null, 'int8');
    expect(enc.data!.length + enc.scales!.length).toBe(5 * rowWireBytes('int8', width));
    const dec = decodeRows(viaProto(enc), 5, width, 'hidden');
    for (let r = 0; r < 5; r++) {
      let max = 0;
      for (let j = 0; j < width; j++) max = Math.max(max, Math.abs(rows[r * width + j]));
      for (let j = 0; j < width; j++) {
        expect(Math.abs(dec[r * width + j] - rows[r * width + j])).toBeLessThanOrEqual((max / 127) * 0.5 + 1e-6);
      }
    }
    expect(Array.from(dec.subarray(width, 2 * width)).every((x) => x === 0)).toBe(true);
  });

  test('decoding checks width, row count, byte length and int8 scales', () => {
    const enc = viaProto(encodeRows(src, width, null, 'bf16'));
    expect(() => decodeRows(enc, 5, 64, 'hidden')).toThrow('hidden: rows are 37 values wide, expected 64');
    expect(() => decodeRows(enc, 4, width, 'hidden')).toThrow('hidden: 5 rows, expected 4');
    expect(() => decodeRows({ ...enc, data: enc.data.subarray(1) }, 5, width, 'hidden'))
      .toThrow(`hidden: 5 rows x 37 values in bf16 need ${5 * 37 * 2} bytes, got ${5 * 37 * 2 - 1}`);
    const i8 = viaProto(encodeRows(src, width, null, 'int8'));
    expect(() => decodeRows({ ...i8, scales: i8.scales.subarray(4) }, 5, width, 'out')).toThrow('out: int8 rows need 5 f32 scales');
    expect(() => decodeRows(null, 1, width, 'hidden')).toThrow('hidden: missing rows');
  });

  test.each([
    ['f32', NaN], ['f32', Infinity], ['f32', -Infinity], ['bf16', NaN], ['bf16', -Infinity],
  ] as const)('with finite: %s rows holding %s are rejected, naming the row and column', (encoding, bad) => {
    const rows = Float32Array.from(src);
    rows[3 * width + 5] = bad;
    const wire = viaProto(encodeRows(rows, width, null, encoding));
    expect(() => decodeRows(wire, 5, width, 'hidden', { finite: true }))
      .toThrow(`hidden: row 3 holds ${bad} at column 5; rows must be finite (no NaN or Infinity)`);
    // Without the option (the coordinator reading `out`) the value passes through unchanged.
    expect(decodeRows(wire, 5, width, 'out')[3 * width + 5]).toBe(bad);
    // The largest finite values are not mistaken for infinity.
    rows[3 * width + 5] = encoding === 'f32' ? 3.4028234663852886e38 : bf16ToF32(0x7f7f);
    expect(decodeRows(viaProto(encodeRows(rows, width, null, encoding)), 5, width, 'hidden', { finite: true })[3 * width + 5])
      .toBe(rows[3 * width + 5]);
  });

  test('with finite: an int8 scale that is not finite is rejected (its values would be too)', () => {
    const i8 = viaProto(encodeRows(src, width, null, 'int8'));
    const scales = Buffer.from(i8.scales);
    scales.writeFloatLE(Infinity, 8);
    expect(() => decodeRows({ ...i8, scales }, 5, width, 'hidden', { finite: true })).toThrow('hidden: row 2 has an invalid int8 scale Infinity');
  });

  test('the finiteness check costs little next to decoding at Mixtral width (512 x 4096 f32)', () => {
    const H = 4096;
    const big = viaProto(encodeRows(randomRows(512, H, 3), H, null, 'f32'));
    const time = (finite: boolean) => {
      let best = Infinity;
      for (let k = 0; k < 9; k++) {
        const t0 = process.hrtime.bigint();
        decodeRows(big, 512, H, 'hidden', { finite });
        best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e6);
      }
      return best;
    };
    const plain = time(false);
    const checked = time(true);
    // About 2 ms per 8 MiB here; the bound leaves room for a loaded machine (best of 9 tries each; a
    // starved process slows both sides, so the check may also cost as much as the decoding itself).
    expect(checked - plain).toBeLessThan(Math.max(20, plain));
  });
});

describe('mask codecs', () => {
  function maskRow(intermediate: number, active: number[]): Uint8Array {
    const row = new Uint8Array(maskBytes(intermediate));
    for (const i of active) row[i >> 3] |= 1 << (i & 7);
    return row;
  }

  test.each([
    ['sparse mask -> uint16 indices', 160, [0, 7, 63, 64, 159]],
    ['dense mask -> bits', 160, Array.from({ length: 80 }, (_, i) => 2 * i)],
    ['empty mask -> no bytes', 14336, []],
    ['wide model -> uint32 indices', 70000, [0, 65536, 69999]],
  ])('%s round-trips', (_name, intermediate, active) => {
    const row = maskRow(intermediate, active);
    const wire = encodeMask(row, intermediate);
    const { form, bytes } = maskWireBytes(intermediate, active.length);
    expect(wire[form]).toBeDefined();
    expect((wire[form] as Uint8Array).length).toBe(bytes);
    const out = new Uint8Array(maskBytes(intermediate) + 8);
    const n = decodeMaskInto(viaProtoMask(wire), intermediate, out, 8, 'mask');
    expect(n).toBe(active.length);
    expect(out.subarray(8)).toEqual(row);
    expect(maskPopcount(row, intermediate)).toBe(active.length);
  });

  test('the smaller form wins: at 14336 neurons indices until 896 active, then bits', () => {
    expect(maskWireBytes(14336, 895).form).toBe('indices16');
    expect(maskWireBytes(14336, 896).form).toBe('bits');
    expect(maskWireBytes(14336, 896).bytes).toBe(1792);
  });

  test('bits past the intermediate size are dropped on encode', () => {
    const row = maskRow(160, Array.from({ length: 100 }, (_, i) => i));
    row[20] = 0xff; // neurons 160..167 do not exist
    const wire = encodeMask(row, 160);
    expect(wire.bits!.length).toBe(20);
  });

  test('decoding rejects out-of-range indices, stray bits and wrong lengths', () => {
    const out = () => new Uint8Array(maskBytes(160));
    const idx = Buffer.from(Uint16Array.from([3, 170]).buffer);
    expect(() => decodeMaskInto({ indices16: idx, kind: 'indices16' }, 160, out(), 0, 'routes[2].mask'))
      .toThrow('routes[2].mask: mask index 170 out of range (intermediate size 160)');
    expect(() => decodeMaskInto({ bits: Buffer.alloc(19), kind: 'bits' }, 160, out(), 0, 'm')).toThrow('m: bit mask of 19 bytes, expected 20');
    const odd = Buffer.alloc(23);
    expect(() => decodeMaskInto({ indices16: odd, kind: 'indices16' }, 160, out(), 0, 'm')).toThrow('not a whole number of 2-byte indices');
    expect(() => decodeMaskInto({ bits: Buffer.alloc(2), kind: 'bits' }, 10, out(), 0, 'm')).not.toThrow();
    const stray = Buffer.from([0, 0x08]); // bit 11 of a 10-neuron mask
    expect(() => decodeMaskInto({ bits: stray, kind: 'bits' }, 10, out(), 0, 'm')).toThrow('m: mask index 11 out of range (intermediate size 10)');
    expect(() => decodeMaskInto(null, 160, out(), 0, 'm')).toThrow('m: missing mask');
  });

  test('decoding rejects duplicate or unsorted indices; encodeMask writes them strictly ascending', () => {
    const out = () => new Uint8Array(maskBytes(160));
    const u16 = (...i: number[]) => Buffer.from(Uint16Array.from(i).buffer);
    expect(() => decodeMaskInto({ indices16: u16(1, 5, 5), kind: 'indices16' }, 160, out(), 0, 'routes[0].mask'))
      .toThrow('routes[0].mask: mask index 5 at position 2 follows 5; indices must be strictly ascending (no duplicates)');
    expect(() => decodeMaskInto({ indices16: u16(9, 3), kind: 'indices16' }, 160, out(), 0, 'm')).toThrow('mask index 3 at position 1 follows 9');
    const u32 = Buffer.from(Uint32Array.from([65537, 65536]).buffer);
    expect(() => decodeMaskInto({ indices32: u32, kind: 'indices32' }, 70000, new Uint8Array(maskBytes(70000)), 0, 'm'))
      .toThrow('mask index 65536 at position 1 follows 65537');
    // Every set bit of random rows, in order, at both index widths.
    const r = rng(4);
    for (const [intermediate, n] of [[160, 6], [14336, 40], [70000, 40]]) {
      const row = maskRow(intermediate, Array.from({ length: n }, () => Math.floor(r() * intermediate)));
      const wire = encodeMask(row, intermediate);
      const bytes = Uint8Array.from((wire.indices16 ?? wire.indices32) as Uint8Array);
      const idx = wire.indices16 ? new Uint16Array(bytes.buffer) : new Uint32Array(bytes.buffer);
      for (let j = 1; j < idx.length; j++) expect(idx[j]).toBeGreaterThan(idx[j - 1]);
      expect(idx.length).toBe(maskPopcount(row, intermediate));
      const back = new Uint8Array(maskBytes(intermediate));
      expect(decodeMaskInto(viaProtoMask(wire), intermediate, back, 0, 'm')).toBe(idx.length);
      expect(back).toEqual(row);
    }
  });
});
