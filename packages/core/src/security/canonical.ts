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
  // Fast path: the value checked and, where its keys are out of order, copied with them in order;
  // then the engine's own JSON.stringify writes it. Objects with array-index keys (which no
  // object can hold in code-unit order) or a `__proto__` member, and anything refused, go the
  // member-by-member way.
  const ordered = inOrder(value, '', []);
  if (ordered !== SLOW && ordered !== OMIT) return JSON.stringify(ordered);
  const out: string[] = [];
  write(value, '$', '', out, []);
  return out.join('');
}

/** No lone surrogates (they do not survive UTF-8). String#isWellFormed is in Node 20; TS's lib here predates it. */
function wellFormed(s: string): boolean {
  return (s as unknown as { isWellFormed(): boolean }).isWellFormed();
}

/** inOrder: JSON leaves the value out (undefined, a function, a symbol). */
const OMIT: unique symbol = Symbol('omit');
/** inOrder: the fast path cannot write it (or it is refused: the slow path says why, with its path). */
const SLOW: unique symbol = Symbol('slow');

/** An array index as a property key: objects list those first, in numeric order. */
const INDEX_KEY = /^(?:0|[1-9][0-9]{0,9})$/;

/**
 * `value` as JSON.stringify would see it with every object's keys in code-unit order: the value
 * itself where it already is (no copy), else a copy. OMIT for what JSON leaves out, SLOW for what
 * the fast path does not handle (including everything the canonical form refuses).
 */
function inOrder(value: unknown, key: string, stack: object[]): unknown {
  switch (typeof value) {
    case 'string':
      return wellFormed(value) ? value : SLOW;
    case 'number':
      return Number.isFinite(value) ? value : SLOW;
    case 'boolean':
      return value;
    case 'undefined':
    case 'function':
    case 'symbol':
      return OMIT;
    case 'bigint':
      return SLOW;
  }
  if (value === null) return null;
  const obj = value as object;
  if (typeof (obj as { toJSON?: unknown }).toJSON === 'function') {
    // Replaced by its result here, so JSON.stringify does not call it a second time.
    return inOrder((obj as { toJSON(key: string): unknown }).toJSON(key), key, stack);
  }
  if (stack.includes(obj)) return SLOW;
  stack.push(obj);
  let result: unknown = obj;
  if (Array.isArray(obj)) {
    let copy: unknown[] | undefined;
    for (let i = 0; i < obj.length; i++) {
      const item = obj[i];
      const r = inOrder(item, String(i), stack);
      if (r === SLOW || r === OMIT) {
        result = SLOW; // JSON.stringify would write null for an omitted item: refused
        break;
      }
      if (r !== item) {
        copy ??= obj.slice(0, i);
        copy.push(r);
      } else copy?.push(r);
    }
    if (result !== SLOW && copy) result = copy;
  } else if (!isPlainObject(obj)) result = SLOW;
  else {
    const keys = Object.keys(obj);
    let sorted = true;
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i] as string;
      // `__proto__`: an own member of that name (JSON.parse makes one) cannot be copied by
      // assignment, which would set the copy's prototype and drop the member from the signed form.
      if (INDEX_KEY.test(k) || k === '__proto__' || !wellFormed(k)) {
        sorted = false;
        result = SLOW;
        break;
      }
      if (i > 0 && (keys[i - 1] as string) > k) sorted = false;
    }
    if (result !== SLOW) {
      // Members whose value had to be copied; the rest are copied as they are, if at all.
      let changed: Map<string, unknown> | undefined;
      const rec = obj as Record<string, unknown>;
      for (const k of keys) {
        const v = rec[k];
        const r = inOrder(v, k, stack);
        if (r === SLOW) {
          result = SLOW;
          break;
        }
        // An omitted member stays: JSON.stringify leaves it out as the canonical form does.
        if (r !== v && r !== OMIT) {
          changed ??= new Map();
          changed.set(k, r);
        }
      }
      if (result !== SLOW && (!sorted || changed)) {
        const copy: Record<string, unknown> = {};
        for (const k of sorted ? keys : [...keys].sort(byCodeUnits)) {
          copy[k] = changed?.has(k) ? changed.get(k) : rec[k];
        }
        result = copy;
      }
    }
  }
  stack.pop();
  return result;
}

/** {@link canonicalize} as UTF-8 bytes: what is signed. */
export function canonicalBytes(value: unknown): Buffer {
  return Buffer.from(canonicalize(value), 'utf8');
}

/** Code-unit order, as RFC 8785 §3.2.3 asks (the same as `Array#sort` without a comparator). */
function byCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function fail(path: string, what: string): never {
  throw new ValidationError(`cannot canonicalize ${path}: ${what}`, { data: { path } });
}

function writeString(s: string, path: string, out: string[]): void {
  if (!wellFormed(s)) fail(path, 'string has a lone surrogate (not valid UTF-8)');
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
    if (!isPlainObject(obj)) fail(path, `${constructorName(obj)} is not a plain JSON object`);
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

/**
 * Where `value` holds something that is not a JSON value itself, and what: undefined when it is
 * made of null, booleans, finite numbers, well-formed strings, arrays and plain objects only.
 * A Date, a Buffer or another value with `toJSON`, an `undefined` member, a function, a
 * bigint, a typed array or a class instance is named with its path (`$.data.at`). The
 * canonical form converts or leaves out some of those, so two different values can share it.
 */
export function jsonValueProblem(value: unknown, path = '$'): string | undefined {
  return problemIn(value, path, []);
}

function problemIn(value: unknown, path: string, stack: object[]): string | undefined {
  switch (typeof value) {
    case 'string':
      return wellFormed(value) ? undefined : `${path}: string has a lone surrogate`;
    case 'number':
      return Number.isFinite(value) ? undefined : `${path}: ${value} is not a finite number`;
    case 'boolean':
      return undefined;
    case 'object':
      break;
    default:
      return `${path}: ${typeof value} is not a JSON value`;
  }
  if (value === null) return undefined;
  const obj = value as object;
  const plain = Array.isArray(obj) || isPlainObject(obj);
  if (!plain || typeof (obj as { toJSON?: unknown }).toJSON === 'function') {
    return `${path}: ${constructorName(obj)} is not a JSON value`;
  }
  if (stack.includes(obj)) return `${path}: cyclic structure`;
  stack.push(obj);
  let problem: string | undefined;
  if (Array.isArray(obj)) {
    for (let i = 0; i < obj.length && problem === undefined; i++) problem = problemIn(obj[i], `${path}[${i}]`, stack);
  } else {
    for (const k of Object.keys(obj)) {
      problem = problemIn((obj as Record<string, unknown>)[k], `${path}.${k}`, stack);
      if (problem !== undefined) break;
    }
  }
  stack.pop();
  return problem;
}

/** What to call an object that is not plain JSON in an error: its constructor's name. */
function constructorName(obj: object): string {
  const name = (obj as { constructor?: { name?: unknown } }).constructor?.name;
  return typeof name === 'string' && name ? name : 'object';
}
