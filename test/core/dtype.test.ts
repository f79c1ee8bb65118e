import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16, fromF32, toF32, dtypeBytes } from '../../core/dtype';

const u16 = (bytes: Uint8Array) => Array.from(new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2));
const bytesOf16 = (halves: number[]) => new Uint8Array(Uint16Array.from(halves).buffer);
const f32FromBits = (bits: number[]) => new Float32Array(Uint32Array.from(bits).buffer);

describe('bfloat16', () => {
  test('widening is exact for every bf16 value', () => {
    const all = Array.from({ length: 65536 }, (_, i) => i);
    const f = bf16ToF32(bytesOf16(all));
    const bits = new Uint32Array(f.buffer);
    const wrong = all.filter((i) => bits[i] !== (i << 16) >>> 0);
    expect(wrong).toEqual([]);
  });

  test('narrowing rounds to nearest, ties to even, and keeps inf/nan', () => {
    const src = f32FromBits([
      0x3f800000, // 1.0 exact
      0x3f808000, // halfway between 0x3f80 and 0x3f81 -> even 0x3f80
      0x3f818000, // halfway between 0x3f81 and 0x3f82 -> even 0x3f82
      0x3f808001, // just above halfway -> up
      0x3f807fff, // just below halfway -> down
      0x7f7fffff, // max float -> rounds to inf
      0x7f800000, // inf
      0xff800000, // -inf
      0x7fc00001, // nan stays nan
      0x80000000, // -0
    ]);
    expect(u16(f32ToBf16(src))).toEqual([0x3f80, 0x3f80, 0x3f82, 0x3f81, 0x3f80, 0x7f80, 0x7f80, 0xff80, 0x7fc0, 0x8000]);
    expect(Number.isNaN(bf16ToF32(f32ToBf16(Float32Array.of(NaN)))[0])).toBe(true);
  });
});

describe('float16', () => {
  test('every finite half survives f16 -> f32 -> f16', () => {
    const all = Array.from({ length: 65536 }, (_, i) => i).filter((h) => (h & 0x7c00) !== 0x7c00 || (h & 0x3ff) === 0);
    const back = u16(f32ToF16(f16ToF32(bytesOf16(all))));
    const wrong = all.filter((h, i) => back[i] !== h);
    expect(wrong).toEqual([]);
  });

  test('known values, subnormals, overflow and rounding', () => {
    const v = f16ToF32(bytesOf16([0x3c00, 0xc000, 0x7bff, 0x0001, 0x03ff, 0x0400, 0x7c00, 0xfc00, 0x8000]));
    expect(Array.from(v)).toEqual([1, -2, 65504, 2 ** -24, 1023 * 2 ** -24, 2 ** -14, Infinity, -Infinity, -0]);
    expect(Number.isNaN(f16ToF32(bytesOf16([0x7e00]))[0])).toBe(true);

    const src = Float32Array.of(
      65520, // halfway between 65504 and 65536 -> ties to even (overflow) -> inf
      65519, // below halfway -> 65504
      1 + 2 ** -11, // halfway between 1 and 1+2^-10 -> even (1)
      1 + 3 * 2 ** -11, // halfway -> even (1 + 2^-9)
      2 ** -25, // halfway between 0 and the smallest subnormal -> even (0)
      3 * 2 ** -25, // halfway between 1 and 2 subnormal units -> even (2)
      2 ** -26, // below half the smallest subnormal -> 0
      1e-10, // underflow -> 0
      -1e10, // overflow -> -inf
      NaN,
    );
    expect(u16(f32ToF16(src))).toEqual([0x7c00, 0x7bff, 0x3c00, 0x3c02, 0x0000, 0x0002, 0x0000, 0x0000, 0xfc00, 0x7e00]);
  });
});

describe('toF32 / fromF32', () => {
  test('all three dtypes, lower or upper case, with an optional destination', () => {
    const x = Float32Array.of(0.5, -3, 100);
    for (const d of ['F32', 'F16', 'BF16', 'bf16', 'f16', 'f32']) {
      const bytes = fromF32(d, x);
      expect(bytes.byteLength).toBe(3 * dtypeBytes(d));
      expect(Array.from(toF32(d, bytes))).toEqual([0.5, -3, 100]);
    }
    const dst = new Float32Array(4);
    const out = toF32('BF16', fromF32('BF16', x), dst);
    expect(out).toBe(dst);
    expect(Array.from(dst)).toEqual([0.5, -3, 100, 0]);
  });

  test('an unaligned source is handled (rows sliced out of a buffer)', () => {
    const buf = new Uint8Array(7);
    buf.set(fromF32('BF16', Float32Array.of(1.5, -2)), 1);
    expect(Array.from(bf16ToF32(buf.subarray(1, 5)))).toEqual([1.5, -2]);
    const f32 = new Uint8Array(9);
    f32.set(new Uint8Array(Float32Array.of(7, 8).buffer), 1);
    expect(Array.from(toF32('F32', f32.subarray(1, 9)))).toEqual([7, 8]);
  });

  test('unknown dtype and bad sizes are errors', () => {
    expect(() => toF32('I8', new Uint8Array(2))).toThrow(/unknown dtype 'I8'/);
    expect(() => bf16ToF32(new Uint8Array(3))).toThrow(/even number of bytes/);
    expect(() => f16ToF32(new Uint8Array(4), new Float32Array(1))).toThrow(/destination holds 1 floats, need 2/);
  });
});
