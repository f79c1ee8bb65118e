// The run socket's framing (core/wire/run-frames.ts) on its own: a byte stream cut at any
// point gives the same frames, frames inside one chunk are views of it, and a bad header
// (unknown type, a length over the limit) throws before anything is buffered.
import {
  errorPayload, FRAME_HEADER_BYTES, FrameError, frameHeader, FrameReader, FrameType, readErrorPayload,
} from '../../core/wire/run-frames';

const ALL = [FrameType.REQUEST, FrameType.RESPONSE, FrameType.ERROR, FrameType.END, FrameType.PING, FrameType.PONG];

const frame = (type: FrameType, payload: Buffer) => Buffer.concat([frameHeader(type, payload.length), payload]);

/** Every frame `reader` gives for `chunks`, payloads copied (a view may be reused by the caller). */
function collect(reader: FrameReader, chunks: Buffer[]): [FrameType, string][] {
  const out: [FrameType, string][] = [];
  for (const c of chunks) reader.push(c, (t, p) => out.push([t, p.toString('hex')]));
  return out;
}

/** A stream of frames with payloads of 0..40 bytes, deterministic. */
function stream(): { bytes: Buffer; frames: [FrameType, string][] } {
  const frames: [FrameType, string][] = [];
  const parts: Buffer[] = [];
  for (let i = 0; i < 12; i++) {
    const type = ALL[i % ALL.length];
    const len = [0, 1, 4, 5, 6, 17, 40][i % 7];
    const payload = Buffer.from(Array.from({ length: len }, (_, j) => (i * 31 + j * 7) & 0xff));
    frames.push([type, payload.toString('hex')]);
    parts.push(frame(type, payload));
  }
  return { bytes: Buffer.concat(parts), frames };
}

describe('FrameReader', () => {
  test('the frame header is u32 LE length then the type byte', () => {
    expect(frameHeader(FrameType.ERROR, 0x01020304)).toEqual(Buffer.from([4, 3, 2, 1, 3]));
    expect(FRAME_HEADER_BYTES).toBe(5);
  });

  test('one chunk with several frames (zero-length payloads too) gives every frame in order', () => {
    const { bytes, frames } = stream();
    const reader = new FrameReader(ALL);
    expect(collect(reader, [bytes])).toEqual(frames);
    expect(reader.buffered).toBe(0);
  });

  test('a stream cut in two at every byte boundary gives the same frames (header split, payload split)', () => {
    const { bytes, frames } = stream();
    for (let cut = 0; cut <= bytes.length; cut++) {
      const reader = new FrameReader(ALL);
      expect(collect(reader, [bytes.subarray(0, cut), bytes.subarray(cut)])).toEqual(frames);
      expect(reader.buffered).toBe(0);
    }
  });

  test('a stream fed one byte at a time, and in chunks of 2, 3 and 7 bytes, gives the same frames', () => {
    const { bytes, frames } = stream();
    for (const size of [1, 2, 3, 7]) {
      const chunks: Buffer[] = [];
      for (let at = 0; at < bytes.length; at += size) chunks.push(bytes.subarray(at, at + size));
      expect(collect(new FrameReader(ALL), chunks)).toEqual(frames);
    }
  });

  test('buffered counts the bytes of a frame received in part', () => {
    const f = frame(FrameType.REQUEST, Buffer.alloc(10, 9));
    const reader = new FrameReader(ALL);
    const got: Buffer[] = [];
    reader.push(f.subarray(0, 3), (_t, p) => got.push(p));
    expect(reader.buffered).toBe(3);
    reader.push(f.subarray(3, 9), (_t, p) => got.push(p));
    expect(reader.buffered).toBe(4); // the header is consumed; 4 payload bytes wait
    reader.push(f.subarray(9), (_t, p) => got.push(p));
    expect(reader.buffered).toBe(0);
    expect(got).toEqual([Buffer.alloc(10, 9)]);
  });

  test('a frame inside one chunk is a view of it (no copy); one spread over chunks is a copy', () => {
    const chunk = Buffer.concat([frame(FrameType.PING, Buffer.alloc(0)), frame(FrameType.REQUEST, Buffer.from('abcdef'))]);
    const views: Buffer[] = [];
    new FrameReader(ALL).push(chunk, (_t, p) => views.push(p));
    expect(views[1].toString()).toBe('abcdef');
    expect(views[1].buffer).toBe(chunk.buffer);
    expect(views[1].byteOffset).toBe(chunk.byteOffset + 2 * FRAME_HEADER_BYTES);
    chunk[2 * FRAME_HEADER_BYTES] = 'X'.charCodeAt(0);
    expect(views[1].toString()).toBe('Xbcdef');

    const whole = frame(FrameType.REQUEST, Buffer.from('abcdef'));
    const a = Buffer.from(whole.subarray(0, 8));
    const b = Buffer.from(whole.subarray(8));
    const copies: Buffer[] = [];
    const reader = new FrameReader(ALL);
    reader.push(a, (_t, p) => copies.push(p));
    reader.push(b, (_t, p) => copies.push(p));
    // A copy: changing the chunks afterwards does not change it.
    a.fill(0);
    b.fill(0);
    expect(copies[0].toString()).toBe('abcdef');
  });

  test('a type the reader does not accept throws FrameError, also when the header arrives split', () => {
    const bad = frameHeader(7 as FrameType, 3);
    expect(() => new FrameReader(ALL).push(bad, () => undefined)).toThrow(FrameError);
    expect(() => new FrameReader(ALL).push(bad, () => undefined)).toThrow('unknown frame type 7');
    // The node's reader takes REQUEST, PING and PONG only: a RESPONSE from a client is unknown.
    const node = new FrameReader([FrameType.REQUEST, FrameType.PING, FrameType.PONG]);
    expect(() => node.push(frame(FrameType.RESPONSE, Buffer.alloc(2)), () => undefined)).toThrow('unknown frame type 2');
    const split = new FrameReader(ALL);
    split.push(bad.subarray(0, 4), () => undefined);
    expect(() => split.push(bad.subarray(4), () => undefined)).toThrow(FrameError);
    // A good frame before the bad one in the same chunk is still delivered.
    const seen: FrameType[] = [];
    expect(() => new FrameReader(ALL).push(Buffer.concat([frame(FrameType.PING, Buffer.alloc(0)), bad]), (t) => seen.push(t)))
      .toThrow(FrameError);
    expect(seen).toEqual([FrameType.PING]);
  });

  test('a length over maxBytes throws FrameError from the header alone, before any payload is buffered', () => {
    const reader = new FrameReader(ALL, 100);
    const frames: number[] = [];
    reader.push(frame(FrameType.REQUEST, Buffer.alloc(100)), (_t, p) => frames.push(p.length)); // at the limit: fine
    expect(frames).toEqual([100]);
    expect(() => reader.push(frameHeader(FrameType.REQUEST, 101), () => undefined))
      .toThrow('a frame of 101 bytes is above the 100-byte message limit');
    const r2 = new FrameReader(ALL, 100);
    expect(() => r2.push(Buffer.concat([frameHeader(FrameType.REQUEST, 0xffffffff), Buffer.alloc(50)]), () => undefined)).toThrow(FrameError);
    expect(r2.buffered).toBe(0);
    // The default limit is the message limit: 256 MiB passes the header check, one byte more does not.
    const def = new FrameReader(ALL);
    def.push(frameHeader(FrameType.REQUEST, 256 * 1024 * 1024), () => undefined);
    expect(def.buffered).toBe(0);
    expect(() => new FrameReader(ALL).push(frameHeader(FrameType.REQUEST, 256 * 1024 * 1024 + 1), () => undefined)).toThrow(FrameError);
  });
});

describe('ERROR payloads', () => {
  test('errorPayload / readErrorPayload round trip, UTF-8 detail and large codes', () => {
    for (const [code, detail] of [[3, 'bad frame'], [0, ''], [14, 'nœud indisponible ✓'], [0xffffffff, 'x']] as const) {
      const p = errorPayload(code, detail);
      expect(p.readUInt32LE(0)).toBe(code);
      expect(readErrorPayload(p)).toEqual({ code, detail });
    }
  });

  test('an ERROR payload under 4 bytes reads as INTERNAL saying so', () => {
    expect(readErrorPayload(Buffer.from([1, 2]))).toEqual({ code: 13, detail: 'an ERROR frame of 2 bytes (at least 4)' });
  });
});
