import { ConfigError } from '../errors.js';

/**
 * Walking message data for the verification rules: field paths and an iterative walk. Every walk
 * is iterative (no recursion, so deeply nested data cannot overflow the stack) and gives up past
 * {@link WALK_MAX_DEPTH} levels, which also stops it on cyclic data handed to `publish`.
 */

/** Nesting no walk goes past; deeper (or cyclic) data is rejected by the rule that walks it. */
export const WALK_MAX_DEPTH = 10_000;

// ---------------------------------------------------------------------------------------------
// Field paths: `a.b` (from the root of data), `*` one key, `**` any number of keys (also none).
// Array elements add no segment: `messages.text` also reaches `messages[3].text`.

/** Compiled field paths (up to 255 keys each), matched key by key as a small NFA; a state is `pattern << 8 | key index`. */
export class FieldPaths {
  readonly #segments: readonly (readonly string[])[];

  constructor(paths: readonly string[], path: string) {
    this.#segments = paths.map((p, i) => {
      const segs = p.split('.');
      if (segs.length > 255 || segs.some((s) => s.length === 0)) {
        throw new ConfigError(`invalid field path ${JSON.stringify(p)}: non-empty keys separated by '.' expected`, {
          path: `${path}[${i}]`,
        });
      }
      return segs;
    });
  }

  /** The states before any key: the root. */
  start(): number[] {
    const states: number[] = [];
    for (let p = 0; p < this.#segments.length; p++) this.#add(states, p, 0);
    return states;
  }

  /** The states after descending into `key`; empty when no path can match below it. */
  step(states: readonly number[], key: string): number[] {
    const next: number[] = [];
    for (const s of states) {
      const p = s >> 8;
      const i = s & 255;
      const seg = (this.#segments[p] as readonly string[])[i];
      if (seg === '**') this.#add(next, p, i);
      else if (seg === '*' || seg === key) this.#add(next, p, i + 1);
    }
    return next;
  }

  /** Whether a path ends at the current position. */
  accepts(states: readonly number[]): boolean {
    for (const s of states) if ((s & 255) === (this.#segments[s >> 8] as readonly string[]).length) return true;
    return false;
  }

  #add(states: number[], p: number, i: number): void {
    const s = (p << 8) | i;
    if (states.includes(s)) return;
    states.push(s);
    // `**` may match no key at all.
    if ((this.#segments[p] as readonly string[])[i] === '**') this.#add(states, p, i + 1);
  }
}

/** Where a walk is: a container, how it was reached, and for scoped rules what is still in scope. */
export interface Frame {
  readonly value: object;
  readonly parent: Frame | undefined;
  readonly key: string | number | undefined;
  readonly depth: number;
  /** `true`: all of this subtree is in scope; otherwise the live field-path states. */
  readonly scope: true | readonly number[];
}

/** `data.messages[2].text` for a key under `frame`. */
export function pathOf(frame: Frame | undefined, key?: string | number): string {
  const keys: (string | number)[] = key === undefined ? [] : [key];
  for (let f = frame; f?.key !== undefined; f = f.parent) keys.push(f.key);
  let out = 'data';
  for (let i = keys.length - 1; i >= 0; i--) {
    const k = keys[i] as string | number;
    out += typeof k === 'number' ? `[${k}]` : `.${k}`;
  }
  return out;
}

/** The keys from the root of data to `frame`. */
export function keysOf(frame: Frame | undefined): (string | number)[] {
  const keys: (string | number)[] = [];
  for (let f = frame; f?.key !== undefined; f = f.parent) keys.push(f.key);
  return keys.reverse();
}

const tooDeep = (): string => `data is nested deeper than ${WALK_MAX_DEPTH} levels (or is cyclic)`;

/**
 * Walks `data`: `visit` is called for every value below a container (with the container's frame,
 * the key and the child's scope) and may return a reason to stop; containers are walked in turn.
 * `childScope` maps a frame's scope and an object key to the child's, or undefined to skip it.
 */
export function walk(
  data: unknown,
  rootScope: true | readonly number[],
  childScope: (scope: true | readonly number[], key: string) => true | readonly number[] | undefined,
  visit: (
    value: unknown,
    frame: Frame | undefined,
    key: string | number | undefined,
    scope: true | readonly number[],
  ) => string | 'skip' | undefined,
): string | undefined {
  const rootVerdict = visit(data, undefined, undefined, rootScope);
  if (rootVerdict === 'skip') return undefined;
  if (rootVerdict !== undefined) return rootVerdict;
  if (typeof data !== 'object' || data === null) return undefined;
  const stack: Frame[] = [{ value: data, parent: undefined, key: undefined, depth: 1, scope: rootScope }];
  for (let frame = stack.pop(); frame !== undefined; frame = stack.pop()) {
    const container = frame.value;
    const isArray = Array.isArray(container);
    const keys = isArray ? undefined : Object.keys(container);
    const n = isArray ? container.length : (keys as string[]).length;
    for (let i = 0; i < n; i++) {
      const key = isArray ? i : ((keys as string[])[i] as string);
      const scope = isArray ? frame.scope : childScope(frame.scope, key as string);
      if (scope === undefined) continue;
      const value = (container as Record<string | number, unknown>)[key];
      const verdict = visit(value, frame, key, scope);
      if (verdict === 'skip') continue;
      if (verdict !== undefined) return verdict;
      if (typeof value === 'object' && value !== null) {
        if (frame.depth >= WALK_MAX_DEPTH) return tooDeep();
        stack.push({ value, parent: frame, key, depth: frame.depth + 1, scope });
      }
    }
  }
  return undefined;
}

/** A `childScope` for unscoped rules: every value is in scope. */
export const everything = (): true => true;

/** A `childScope` for field paths: all below a matched key, the live states, or undefined once none can match. */
export function scopeBelow(
  fields: FieldPaths,
  scope: true | readonly number[],
  key: string,
): true | readonly number[] | undefined {
  if (scope === true) return true;
  const next = fields.step(scope, key);
  if (next.length === 0) return undefined;
  return fields.accepts(next) ? true : next;
}

/** A copy of `root` with the value at each path replaced; each container on a path is copied once. */
export function replaceAt(root: object, paths: readonly (readonly (string | number)[])[], replacement: string): object {
  const copies = new Map<object, Record<string | number, unknown>>();
  const copyOf = (value: object): Record<string | number, unknown> => {
    let copy = copies.get(value);
    if (copy === undefined) {
      copy = (Array.isArray(value) ? [...value] : { ...value }) as Record<string | number, unknown>;
      copies.set(value, copy);
    }
    return copy;
  };
  const out = copyOf(root);
  for (const keys of paths) {
    let original = root as Record<string | number, unknown>;
    let copy = out;
    for (let i = 0; i < keys.length - 1; i++) {
      const key = keys[i] as string | number;
      const child = original[key] as Record<string | number, unknown>;
      const childCopy = copyOf(child);
      setOwn(copy, key, childCopy);
      original = child;
      copy = childCopy;
    }
    setOwn(copy, keys[keys.length - 1] as string | number, replacement);
  }
  return out;
}

/** Sets an own data property, also for a key such as `__proto__` that plain assignment would not create. */
function setOwn(target: Record<string | number, unknown>, key: string | number, value: unknown): void {
  Object.defineProperty(target, key, { value, writable: true, enumerable: true, configurable: true });
}
