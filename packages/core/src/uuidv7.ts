import { randomFillSync } from 'node:crypto';

// RFC 9562 UUIDv7 with a 12-bit counter in rand_a (method 1), so ids made in the same millisecond
// still sort in creation order. Random bytes come from a pool refilled in bulk: one
// getrandom call per 256 ids instead of one per id.
const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));
const pool = Buffer.allocUnsafe(2560);
let offset = pool.length;
let lastMs = -1;
let counter = 0;

/** A new UUIDv7 string: time-ordered, monotonic within this process. */
export function uuidv7(nowMs: number = Date.now()): string {
  if (offset + 10 > pool.length) {
    randomFillSync(pool);
    offset = 0;
  }
  const r = offset;
  offset += 10;
  if (nowMs > lastMs) {
    lastMs = nowMs;
    // Start each millisecond at a random point in the lower half, leaving room to count up.
    counter = ((pool[r] as number) << 3) | ((pool[r + 1] as number) & 0x07);
  } else if (++counter > 0xfff) {
    // Counter exhausted: borrow the next millisecond rather than lose monotonicity.
    lastMs++;
    counter = 0;
  }
  const ms = lastMs;
  const hi = Math.floor(ms / 0x1000000);
  const lo = ms % 0x1000000;
  const h = HEX;
  return (
    (h[(hi >>> 16) & 0xff] as string) +
    h[(hi >>> 8) & 0xff] +
    h[hi & 0xff] +
    h[(lo >>> 16) & 0xff] +
    '-' +
    h[(lo >>> 8) & 0xff] +
    h[lo & 0xff] +
    '-' +
    h[0x70 | (counter >>> 8)] +
    h[counter & 0xff] +
    '-' +
    h[0x80 | ((pool[r + 2] as number) & 0x3f)] +
    h[pool[r + 3] as number] +
    '-' +
    h[pool[r + 4] as number] +
    h[pool[r + 5] as number] +
    h[pool[r + 6] as number] +
    h[pool[r + 7] as number] +
    h[pool[r + 8] as number] +
    h[pool[r + 9] as number]
  );
}
