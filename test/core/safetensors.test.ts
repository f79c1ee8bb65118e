import fs from 'node:fs';
import path from 'node:path';
import { SafetensorsFile, writeSafetensors } from '../../core/safetensors';
import { f32ToBf16, f32ToF16, toF32 } from '../../core/dtype';
import { UserError } from '../../core/errors';
import { rawSafetensors, tempDir } from './fixtures';

const tmp = tempDir('ts-safetensors-');
afterAll(() => tmp.cleanup());
let n = 0;
const file = (name = `t${n++}.safetensors`) => path.join(tmp.dir, name);

function f32Bytes(values: number[]): Uint8Array {
  return new Uint8Array(Float32Array.from(values).buffer);
}

/** Writes raw bytes and expects open() to fail with a UserError matching `re`. */
async function expectOpenError(bytes: Uint8Array, re: RegExp): Promise<string> {
  const p = file();
  fs.writeFileSync(p, bytes);
  const err = await SafetensorsFile.open(p).then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(UserError);
  const msg = (err as Error).message;
  expect(msg).toMatch(re);
  expect(msg).toContain(p); // every message names the file
  expect(msg).not.toContain('\n');
  return msg;
}

describe('safetensors round trip', () => {
  test('F32, F16 and BF16 tensors and metadata come back exactly', async () => {
    const values = [0, 1, -2.5, 3.140625, 65504, -1e-3, 1e-7, 7];
    const p = file('round.safetensors');
    const f32 = Float32Array.from(values);
    await writeSafetensors(
      p,
      [
        { name: 'a.f32', dtype: 'F32', shape: [2, 4], data: new Uint8Array(f32.buffer) },
        { name: 'b.f16', dtype: 'F16', shape: [8], data: f32ToF16(f32) },
        { name: 'c.bf16', dtype: 'BF16', shape: [4, 2], data: () => f32ToBf16(f32) },
        { name: 'd.empty', dtype: 'F32', shape: [0, 3], data: new Uint8Array(0) },
      ],
      { format: 'pt', note: 'x' },
    );
    const bytes = fs.readFileSync(p);
    const headerLen = Number(bytes.readBigUInt64LE(0));
    expect(headerLen % 8).toBe(0); // data starts 8-byte aligned

    const f = await SafetensorsFile.open(p);
    try {
      expect(f.metadata).toEqual({ format: 'pt', note: 'x' });
      expect(f.tensors().map((t) => t.name).sort()).toEqual(['a.f32', 'b.f16', 'c.bf16', 'd.empty']);
      const a = f.info('a.f32')!;
      expect(a).toMatchObject({ dtype: 'F32', shape: [2, 4], nbytes: 32, file: p, offset: 8 + headerLen });
      expect(f.info('nope')).toBeUndefined();

      const ra = await f.read('a.f32');
      expect(ra.byteOffset % 8).toBe(0);
      expect(Array.from(new Float32Array(ra.buffer, ra.byteOffset, 8))).toEqual(Array.from(f32));
      // f16/bf16 round to their precision; the bytes match what we wrote
      expect(Array.from(await f.read('b.f16'))).toEqual(Array.from(f32ToF16(f32)));
      expect(Array.from(toF32('F16', await f.read('b.f16')))).toEqual([0, 1, -2.5, 3.140625, 65504, -0.0010004043579101562, 1.1920928955078125e-7, 7]);
      expect(Array.from(toF32('BF16', await f.read('c.bf16')))).toEqual([0, 1, -2.5, 3.140625, 65536, -0.00099945068359375, 1.0011717677116394e-7, 7]);
      expect((await f.read('d.empty')).byteLength).toBe(0);
      await expect(f.read('nope')).rejects.toThrow(/tensor 'nope' is not in .*t?round\.safetensors/);
    } finally {
      await f.close();
    }
  });

  test('writer rejects data whose length does not match the shape', async () => {
    await expect(writeSafetensors(file(), [{ name: 'x', dtype: 'F32', shape: [3], data: new Uint8Array(8) }])).rejects.toThrow(
      /tensor x has 8 bytes, F32 \[3\] needs 12/,
    );
  });

  test('reads a tensor at its offset without touching the rest of the file', async () => {
    // A 4 MB tensor followed by a small one: reading the small one reads only its bytes.
    const p = file();
    const big = new Uint8Array(4 << 20).fill(7);
    await writeSafetensors(p, [
      { name: 'big', dtype: 'F32', shape: [1 << 20], data: big },
      { name: 'small', dtype: 'F32', shape: [2], data: f32Bytes([5, 6]) },
    ]);
    const f = await SafetensorsFile.open(p);
    try {
      const fh = (f as unknown as { fh: fs.promises.FileHandle }).fh;
      const spy = jest.spyOn(fh, 'read');
      const small = await f.read('small');
      expect(Array.from(new Float32Array(small.buffer))).toEqual([5, 6]);
      const requested = spy.mock.calls.reduce((s, c) => s + ((c as unknown[])[2] as number), 0);
      expect(requested).toBe(8);
      spy.mockRestore();
    } finally {
      await f.close();
    }
  });
});

describe('safetensors bad input', () => {
  const good = { w: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] } };
  const data16 = new Uint8Array(16);

  test('a file shorter than the 8-byte length', async () => {
    await expectOpenError(new Uint8Array(5), /file is 5 bytes, too short for the 8-byte safetensors header length: the file is truncated/);
  });

  test('a header length beyond the end of the file', async () => {
    await expectOpenError(rawSafetensors(good, data16, 1000000n), /header length 1000000 runs past the end of the file \(\d+ bytes\): the file is truncated/);
  });

  test('a truncated file (data section cut short)', async () => {
    const whole = rawSafetensors(good, data16);
    await expectOpenError(whole.subarray(0, whole.byteLength - 4), /tensor 'w' in .*: data_offsets \[0, 16\] run past the end of the data section \(12 bytes\): the file is truncated or corrupt/);
  });

  test('offsets out of range', async () => {
    const h = { w: { dtype: 'F32', shape: [2, 2], data_offsets: [64, 80] } };
    await expectOpenError(rawSafetensors(h, data16), /tensor 'w' in .*data_offsets \[64, 80\] run past the end of the data section \(16 bytes\)/);
  });

  test('offsets that are not [begin <= end]', async () => {
    const h = { w: { dtype: 'F32', shape: [2, 2], data_offsets: [16, 0] } };
    await expectOpenError(rawSafetensors(h, data16), /tensor 'w' in .*data_offsets \[16,0\] must be two non-negative integers/);
  });

  test('overlapping tensors', async () => {
    const h = {
      a: { dtype: 'F32', shape: [3], data_offsets: [0, 12] },
      b: { dtype: 'F32', shape: [2], data_offsets: [8, 16] },
    };
    await expectOpenError(rawSafetensors(h, data16), /tensor 'b' in .*: its data \[8, 16\) overlaps tensor 'a' \[0, 12\): the header is corrupt/);
  });

  test('byte length different from shape x dtype size', async () => {
    const h = { w: { dtype: 'BF16', shape: [2, 2], data_offsets: [0, 16] } };
    await expectOpenError(rawSafetensors(h, data16), /tensor 'w' in .*: data_offsets \[0, 16\] hold 16 bytes but BF16 \[2, 2\] needs 8/);
  });

  test.each(['Q4', 'I8', 'F64', 'U8', 'BOOL', 'F8_E4M3'])('unknown dtype %s', async (dtype) => {
    const h = { w: { dtype, shape: [2], data_offsets: [0, 16] } };
    const msg = await expectOpenError(rawSafetensors(h, data16), /unknown dtype/);
    expect(msg).toMatch(new RegExp(`^unknown dtype '${dtype}' for tensor w in .*\\.safetensors \\(supported: F32, F16, BF16\\)$`));
  });

  test('a shape that is not a list of non-negative integers', async () => {
    const h = { w: { dtype: 'F32', shape: [-1, 4], data_offsets: [0, 16] } };
    await expectOpenError(rawSafetensors(h, data16), /tensor 'w' in .*: shape \[-1,4\] is not a list of non-negative integers/);
    const h2 = { w: { dtype: 'F32', shape: [1.5], data_offsets: [0, 16] } };
    await expectOpenError(rawSafetensors(h2, data16), /shape \[1.5\] is not a list of non-negative integers/);
  });

  test('a header that is not JSON, or not an object', async () => {
    const bytes = rawSafetensors(good, data16);
    bytes[8] = 0x5b; // '[' instead of '{'
    await expectOpenError(bytes, /safetensors header is not valid UTF-8 JSON/);
    await expectOpenError(rawSafetensors([1, 2], data16), /the safetensors header is not a JSON object/);
  });

  test('bad __metadata__', async () => {
    await expectOpenError(rawSafetensors({ ...good, __metadata__: { a: 1 } }, data16), /"__metadata__" entry 'a' must be a string/);
  });

  test('a missing file', async () => {
    await expect(SafetensorsFile.open(path.join(tmp.dir, 'none.safetensors'))).rejects.toThrow(/none\.safetensors: safetensors file not found/);
  });

  test('a file truncated after open is reported on read', async () => {
    const p = file();
    fs.writeFileSync(p, rawSafetensors(good, data16));
    const f = await SafetensorsFile.open(p);
    try {
      fs.truncateSync(p, fs.statSync(p).size - 8);
      await expect(f.read('w')).rejects.toThrow(/unexpected end of file while reading tensor 'w': the file is truncated/);
    } finally {
      await f.close();
    }
  });
});
