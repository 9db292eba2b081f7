import { ConfigError } from '../errors.js';
import { positiveInteger } from '../validate.js';
import type { RuleOutcome, VerificationRule, VerificationRuleFactory } from './verification.js';

/**
 * The built-in rules and sanitizer of the verification pipeline, and the field-path matching
 * they share. Every walk over `data` is iterative (no recursion, so a deeply nested payload
 * cannot overflow the stack) and gives up past {@link WALK_MAX_DEPTH} levels, which also stops
 * it on cyclic data handed to `publish`.
 */

/** Nesting no walk goes past; deeper (or cyclic) data is rejected by the rule that walks it. */
export const WALK_MAX_DEPTH = 10_000;

/** The built-in defaults (DESIGN §6: defaults in one frozen object). */
export const VERIFICATION_RULE_DEFAULTS = Object.freeze({
  /** What `redact` writes in place of a value. */
  replacement: '[REDACTED]',
  /** Characters of in-scope text one `deny` rule scans per message before it rejects the message. */
  maxScanChars: 1_048_576,
});

type Json = Record<string, unknown>;

function isMapping(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function show(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  return `${typeof value} ${JSON.stringify(value)}`;
}

/** `value` as a mapping whose keys are all in `allowed`, or a ConfigError naming the path. */
export function mappingOptions(value: unknown, path: string, allowed: readonly string[]): Json {
  if (!isMapping(value)) throw new ConfigError(`must be a mapping, got ${show(value)}`, { path });
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) {
      throw new ConfigError(`unknown option; expected ${allowed.join(', ')}`, { path: `${path}.${key}` });
    }
  }
  return value;
}

/** A string or a list of strings (each non-empty) as a list, or a ConfigError naming the path. */
export function stringList(value: unknown, path: string): string[] {
  const list = typeof value === 'string' ? [value] : value;
  if (!Array.isArray(list))
    throw new ConfigError(`must be a string or a list of strings, got ${show(value)}`, { path });
  if (list.length === 0) throw new ConfigError('must not be empty', { path });
  list.forEach((item, i) => {
    if (typeof item !== 'string' || item.length === 0) {
      throw new ConfigError(`must be a non-empty string, got ${show(item)}`, { path: `${path}[${i}]` });
    }
  });
  return list as string[];
}

/** `N` or `{ limit: N }`. */
function limitOption(options: unknown, path: string): number {
  if (isMapping(options)) {
    const o = mappingOptions(options, path, ['limit']);
    return positiveInteger(o.limit, `${path}.limit`);
  }
  return positiveInteger(options, path);
}

// ---------------------------------------------------------------------------------------------
// Field paths: `a.b` (from the root of data), `*` one key, `**` any number of keys (also none).
// Array elements add no segment: `messages.text` also reaches `messages[3].text`.

/** Compiled field paths, matched key by key as a small NFA. States are `pattern * 256 + segment`. */
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
interface Frame {
  readonly value: object;
  readonly parent: Frame | undefined;
  readonly key: string | number | undefined;
  readonly depth: number;
  /** `true`: all of this subtree is in scope; otherwise the live field-path states. */
  readonly scope: true | readonly number[];
}

/** `data.messages[2].text` for a key under `frame`. */
function pathOf(frame: Frame | undefined, key?: string | number): string {
  const keys: (string | number)[] = key === undefined ? [] : [key];
  for (let f = frame; f?.key !== undefined; f = f.parent) keys.push(f.key);
  let out = 'data';
  for (let i = keys.length - 1; i >= 0; i--) {
    const k = keys[i] as string | number;
    out += typeof k === 'number' ? `[${k}]` : `.${k}`;
  }
  return out;
}

function keysOf(frame: Frame | undefined): (string | number)[] {
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
function walk(
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

const everything = (): true => true;

// ---------------------------------------------------------------------------------------------
// maxBytes

/** `maxBytes: N` or `{ limit: N }`: the UTF-8 length of `data` encoded as JSON. */
const maxBytes: VerificationRuleFactory = (options, path) => {
  const limit = limitOption(options, path);
  return {
    check(env): RuleOutcome {
      let json: string | undefined;
      try {
        json = JSON.stringify(env.data);
      } catch (err) {
        return `data cannot be encoded as JSON: ${err instanceof Error ? err.message : String(err)}`;
      }
      if (json === undefined || json.length <= limit / 3) return undefined;
      const bytes = Buffer.byteLength(json, 'utf8');
      if (bytes <= limit) return undefined;
      return { reason: `data is ${bytes} bytes as JSON, over the limit of ${limit}`, code: 'payload-too-large' };
    },
  };
};

// ---------------------------------------------------------------------------------------------
// maxDepth

/** `maxDepth: N` or `{ limit: N }`: a scalar is at depth 0, `{}` and `[]` at 1, `{ a: [] }` at 2. */
const maxDepth: VerificationRuleFactory = (options, path) => {
  const limit = limitOption(options, path);
  const reason = `data is nested deeper than ${limit} levels`;
  return {
    check(env): RuleOutcome {
      const data = env.data;
      if (typeof data !== 'object' || data === null) return undefined;
      const values: object[] = [data];
      const depths: number[] = [1];
      for (let value = values.pop(); value !== undefined; value = values.pop()) {
        const depth = depths.pop() as number;
        const children = Array.isArray(value) ? value : Object.values(value);
        for (const child of children) {
          if (typeof child !== 'object' || child === null) continue;
          if (depth + 1 > limit) return reason;
          values.push(child);
          depths.push(depth + 1);
        }
      }
      return undefined;
    },
  };
};

// ---------------------------------------------------------------------------------------------
// maxKeys

/**
 * `maxKeys: { total, perObject, arrayLength }` (at least one): `total` counts object keys and
 * array elements over the whole payload, `perObject` the keys of any one object, `arrayLength`
 * the elements of any one array.
 */
const maxKeys: VerificationRuleFactory = (options, path) => {
  const o = mappingOptions(options, path, ['total', 'perObject', 'arrayLength']);
  const total = o.total === undefined ? Infinity : positiveInteger(o.total, `${path}.total`);
  const perObject = o.perObject === undefined ? Infinity : positiveInteger(o.perObject, `${path}.perObject`);
  const arrayLength = o.arrayLength === undefined ? Infinity : positiveInteger(o.arrayLength, `${path}.arrayLength`);
  if (o.total === undefined && o.perObject === undefined && o.arrayLength === undefined) {
    throw new ConfigError('set at least one of total, perObject, arrayLength', { path });
  }
  return {
    check(env): RuleOutcome {
      let count = 0;
      const container = (value: unknown, at: () => string): string | undefined => {
        if (typeof value !== 'object' || value === null) return undefined;
        if (Array.isArray(value)) {
          if (value.length > arrayLength)
            return `${at()} has ${value.length} elements, over arrayLength ${arrayLength}`;
          count += value.length;
        } else {
          const n = Object.keys(value).length;
          if (n > perObject) return `${at()} has ${n} keys, over perObject ${perObject}`;
          count += n;
        }
        return count > total ? `data has more than ${total} keys and elements in all` : undefined;
      };
      return walk(env.data, true, everything, (value, frame, key) => container(value, () => pathOf(frame, key)));
    },
  };
};

// ---------------------------------------------------------------------------------------------
// deny

/** Inline flags such as `(?i)` at the start of a pattern, which JavaScript does not support. */
const INLINE_FLAGS = /^\(\?[a-z]+\)/;

/**
 * Whether a pattern repeats, without bound, a group that itself holds an unbounded quantifier
 * (`(a+)+`, `(\w+\s?)*`, `((ab)*c)+`): the usual shape of exponential backtracking. A heuristic,
 * not a proof — overlapping alternatives under a star (`(a|ab)*`) pass it — which is why the scan
 * is capped as well.
 */
export function hasNestedQuantifier(source: string): boolean {
  const groups: boolean[] = [false]; // per open group: whether it holds an unbounded quantifier
  let lastWasLoopingGroup = false;
  let i = 0;
  while (i < source.length) {
    const c = source[i];
    if (c === '\\') {
      i += 2;
      lastWasLoopingGroup = false;
    } else if (c === '[') {
      i++;
      while (i < source.length && source[i] !== ']') i += source[i] === '\\' ? 2 : 1;
      i++;
      lastWasLoopingGroup = false;
    } else if (c === '(') {
      groups.push(false);
      i++;
      lastWasLoopingGroup = false;
    } else if (c === ')') {
      const looping = groups.length > 1 ? (groups.pop() as boolean) : false;
      if (looping) groups[groups.length - 1] = true;
      lastWasLoopingGroup = looping;
      i++;
    } else {
      const ahead = source.slice(i, i + 24);
      const unbounded = c === '*' || c === '+' ? c : /^\{\d+,\}/.exec(ahead)?.[0];
      if (unbounded !== undefined) {
        if (lastWasLoopingGroup) return true;
        groups[groups.length - 1] = true;
        i += unbounded.length;
      } else i += /^\{\d+(,\d+)?\}/.exec(ahead)?.[0].length ?? 1;
      lastWasLoopingGroup = false;
    }
  }
  return false;
}

/**
 * `deny: { patterns, flags?, fields?, maxScanChars?, allowNestedQuantifiers? }`: rejects a message
 * when a string value in scope (anywhere in data, or under one of `fields`) matches a pattern.
 * Patterns are compiled once, when the config loads. Against catastrophic backtracking a rule
 * scans at most `maxScanChars` characters of text per message — more text in scope rejects the
 * message rather than letting a pattern hide behind padding — and refuses patterns that repeat a
 * repeated group unless `allowNestedQuantifiers: true`.
 */
const deny: VerificationRuleFactory = (options, path) => {
  const o = mappingOptions(options, path, ['patterns', 'flags', 'fields', 'maxScanChars', 'allowNestedQuantifiers']);
  const flags = o.flags ?? '';
  if (typeof flags !== 'string' || !/^[imsuv]*$/.test(flags) || new Set(flags).size !== flags.length) {
    throw new ConfigError(`must be a string of RegExp flags from i, m, s, u, v, got ${show(flags)}`, {
      path: `${path}.flags`,
    });
  }
  const allowNested = o.allowNestedQuantifiers ?? false;
  if (typeof allowNested !== 'boolean') {
    throw new ConfigError(`must be a boolean, got ${show(allowNested)}`, { path: `${path}.allowNestedQuantifiers` });
  }
  if (o.patterns === undefined) throw new ConfigError('is required', { path: `${path}.patterns` });
  const regexes = stringList(o.patterns, `${path}.patterns`).map((source, i) => {
    const at = `${path}.patterns[${i}]`;
    if (INLINE_FLAGS.test(source)) {
      throw new ConfigError(`inline flags such as (?i) are not supported by JavaScript; use the flags option`, {
        path: at,
      });
    }
    if (!allowNested && hasNestedQuantifier(source)) {
      throw new ConfigError(
        'a repeated group holding a quantifier can backtrack catastrophically; rewrite it or set allowNestedQuantifiers',
        { path: at },
      );
    }
    try {
      return new RegExp(source, flags);
    } catch (err) {
      throw new ConfigError(`invalid regular expression: ${err instanceof Error ? err.message : String(err)}`, {
        path: at,
        cause: err,
      });
    }
  });
  const maxScanChars =
    o.maxScanChars === undefined
      ? VERIFICATION_RULE_DEFAULTS.maxScanChars
      : positiveInteger(o.maxScanChars, `${path}.maxScanChars`);
  const fields =
    o.fields === undefined ? undefined : new FieldPaths(stringList(o.fields, `${path}.fields`), `${path}.fields`);
  return {
    check(env): RuleOutcome {
      let scanned = 0;
      const scan = (
        value: unknown,
        frame: Frame | undefined,
        key: string | number | undefined,
        scope: true | readonly number[],
      ) => {
        if (typeof value !== 'string' || scope !== true) return undefined;
        scanned += value.length;
        if (scanned > maxScanChars) return `more than ${maxScanChars} characters of text to scan (maxScanChars)`;
        for (let i = 0; i < regexes.length; i++) {
          const re = regexes[i] as RegExp;
          if (re.test(value)) return `${pathOf(frame, key)} matches deny pattern ${i} ${String(re)}`;
        }
        return undefined;
      };
      if (fields === undefined) return walk(env.data, true, everything, scan);
      const start = fields.start();
      return walk(env.data, fields.accepts(start) ? true : start, (scope, key) => scopeBelow(fields, scope, key), scan);
    },
  };
};

function scopeBelow(
  fields: FieldPaths,
  scope: true | readonly number[],
  key: string,
): true | readonly number[] | undefined {
  if (scope === true) return true;
  const next = fields.step(scope, key);
  if (next.length === 0) return undefined;
  return fields.accepts(next) ? true : next;
}

// ---------------------------------------------------------------------------------------------
// redact

/**
 * `redact: { fields, replacement? }`: a sanitizer that replaces the value at every matching field
 * path (whatever it holds) with `replacement` ('[REDACTED]'). The data is copied along the
 * changed paths only; the publisher's object is left as it was.
 */
const redact: VerificationRuleFactory = (options, path) => {
  const o = mappingOptions(options, path, ['fields', 'replacement']);
  if (o.fields === undefined) throw new ConfigError('is required', { path: `${path}.fields` });
  const fields = new FieldPaths(stringList(o.fields, `${path}.fields`), `${path}.fields`);
  const replacement = o.replacement ?? VERIFICATION_RULE_DEFAULTS.replacement;
  if (typeof replacement !== 'string') {
    throw new ConfigError(`must be a string, got ${show(replacement)}`, { path: `${path}.replacement` });
  }
  return {
    sanitize(data): unknown {
      const start = fields.start();
      if (fields.accepts(start)) return replacement;
      const hits: (string | number)[][] = [];
      const failure = walk(
        data,
        start,
        (scope, key) => scopeBelow(fields, scope, key),
        (_value, frame, key, scope) => {
          if (scope !== true || frame === undefined || key === undefined) return undefined;
          hits.push([...keysOf(frame), key]);
          return 'skip';
        },
      );
      if (failure !== undefined) throw new RangeError(failure);
      return hits.length === 0 ? data : replaceAt(data as object, hits, replacement);
    },
  } satisfies VerificationRule;
};

/** A copy of `root` with the value at each path replaced; each container on a path is copied once. */
function replaceAt(root: object, paths: readonly (readonly (string | number)[])[], replacement: string): object {
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

/** The rules every pipeline knows, by the name the config uses. */
export const BUILT_IN_RULES: Readonly<Record<string, VerificationRuleFactory>> = Object.freeze({
  maxBytes,
  maxDepth,
  maxKeys,
  deny,
  redact,
});
