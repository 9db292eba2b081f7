import { ValidationError } from '../errors.js';

/**
 * RFC 8785 JSON Canonicalization Scheme (JCS): the one byte sequence a signer and a verifier
 * both compute for the same JSON value, whatever order its object keys came in.
 *
 * - Object members sorted by their names compared as UTF-16 code units; no whitespace.
 * - Strings and numbers written exactly as ECMAScript's `JSON.stringify` writes them (RFC 8785
 *   defers to it: shortest round-trip numbers, `-0` as `0`, the same escapes).
 * - Only I-JSON values are accepted: a value that `JSON.stringify` would silently change or drop
 *   is refused with a {@link ValidationError} naming its path (`$.data.items[2]`), because a
 *   signature over a value the wire cannot carry exactly would never verify:
 *   non-finite numbers, `undefined` / functions / symbols inside arrays or at the top, bigints,
 *   strings with lone surrogates (they do not survive UTF-8), cycles, and objects that are not
 *   plain (Map, Set, typed arrays, class instances) unless they have `toJSON`.
 * - Like `JSON.stringify`: an object member whose value is `undefined`, a function or a symbol
 *   is left out, and a value with a `toJSON` method is replaced by its result (a Date becomes
 *   its ISO string), so the canonical form is that of what the JSON codec sends.
 */
export function canonicalize(value: unknown): string {
  const out: string[] = [];
  write(value, '$', '', out, []);
  return out.join('');
}

/** {@link canonicalize} as UTF-8 bytes: what is signed. */
export function canonicalBytes(value: unknown): Buffer {
  return Buffer.from(canonicalize(value), 'utf8');
}

/** Matches a lone surrogate (with the `u` flag a well-formed pair is one code point and does not match). */
const LONE_SURROGATE = /\p{Cs}/u;

/** Code-unit order, as RFC 8785 §3.2.3 asks (the same as `Array#sort` without a comparator). */
function byCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function fail(path: string, what: string): never {
  throw new ValidationError(`cannot canonicalize ${path}: ${what}`, { data: { path } });
}

function writeString(s: string, path: string, out: string[]): void {
  if (LONE_SURROGATE.test(s)) fail(path, 'string has a lone surrogate (not valid UTF-8)');
  out.push(JSON.stringify(s));
}

/** Whether `value` is one JSON would write as `{…}` member by member: a plain object or one with a null prototype. */
function isPlainObject(value: object): boolean {
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/**
 * Writes `value` (found at `path`, as member or index `key`) to `out`. Returns false when JSON
 * would leave it out (an object member that is undefined, a function or a symbol).
 */
function write(value: unknown, path: string, key: string, out: string[], stack: object[]): boolean {
  if (value !== null && typeof value === 'object' && typeof (value as { toJSON?: unknown }).toJSON === 'function') {
    value = (value as { toJSON(key: string): unknown }).toJSON(key);
  }
  switch (typeof value) {
    case 'string':
      writeString(value, path, out);
      return true;
    case 'number':
      if (!Number.isFinite(value)) fail(path, `${value} is not a finite number`);
      // Number#toString is the ECMAScript serialization RFC 8785 §3.2.2.3 prescribes (and -0 → '0').
      out.push(JSON.stringify(value));
      return true;
    case 'boolean':
      out.push(value ? 'true' : 'false');
      return true;
    case 'bigint':
      return fail(path, 'bigint is not a JSON number (send it as a string)');
    case 'undefined':
    case 'function':
    case 'symbol':
      return false;
  }
  if (value === null) {
    out.push('null');
    return true;
  }
  const obj = value as object;
  if (stack.includes(obj)) fail(path, 'cyclic structure');
  stack.push(obj);
  if (Array.isArray(obj)) {
    out.push('[');
    for (let i = 0; i < obj.length; i++) {
      if (i > 0) out.push(',');
      const at = `${path}[${i}]`;
      // JSON.stringify would turn these into null: refuse rather than sign something else.
      if (!write(obj[i], at, String(i), out, stack)) fail(at, `${typeof obj[i]} inside an array`);
    }
    out.push(']');
  } else {
    if (!isPlainObject(obj)) {
      const name = (obj as { constructor?: { name?: unknown } }).constructor?.name;
      fail(path, `${typeof name === 'string' && name ? name : 'object'} is not a plain JSON object`);
    }
    const keys = Object.keys(obj).sort(byCodeUnits);
    out.push('{');
    let first = true;
    for (const k of keys) {
      const at = `${path}.${k}`;
      const mark = out.length;
      if (!first) out.push(',');
      writeString(k, at, out);
      out.push(':');
      if (write((obj as Record<string, unknown>)[k], at, k, out, stack)) first = false;
      else out.length = mark; // left out, as JSON.stringify does
    }
    out.push('}');
  }
  stack.pop();
  return true;
}
