import { ConfigError } from '../errors.js';
import { positiveInteger } from '../validate.js';
import type { RuleOutcome, VerificationRule, VerificationRuleFactory } from './verification.js';
import {
  everything,
  FieldPaths,
  type Frame,
  keysOf,
  pathOf,
  replaceAt,
  scopeBelow,
  walk,
} from './verification-walk.js';

/** The built-in rules and sanitizer of the verification pipeline, with their option checks. */

/** The built-in defaults (DESIGN §6: defaults in one frozen object). */
export const VERIFICATION_RULE_DEFAULTS = Object.freeze({
  /** What `redact` writes in place of a value. */
  replacement: '[REDACTED]',
  /** Characters of in-scope text one `deny` rule scans per message before it rejects the message. */
  maxScanChars: 262_144,
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

/** `.*` or `.+` (lazy or not) at the start of an unanchored pattern. */
const LEADING_DOT_STAR = /^\.[*+]/;

/**
 * Whether a pattern repeats, without bound or more than twice, a group that itself holds an
 * unbounded quantifier (`(a+)+`, `(\w+\s?)*`, `((ab)*c)+`, `(\w+\s?){1,40}`): the usual shape of
 * exponential (or high-degree polynomial) backtracking. A heuristic,
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
      } else {
        const bounded = /^\{(\d+)(?:,(\d+))?\}/.exec(ahead);
        // A bounded repeat is as bad once it allows more than two rounds: `(a+){2,40}$` takes
        // seconds on 30 characters. (Two rounds, `(a+){2}`, is quadratic, like `a.*b`.)
        if (bounded !== null && lastWasLoopingGroup && Number(bounded[2] ?? bounded[1]) > 2) return true;
        i += bounded?.[0].length ?? 1;
      }
      lastWasLoopingGroup = false;
    }
  }
  return false;
}

/**
 * `deny: { patterns, flags?, fields?, maxScanChars?, allowSlowPatterns? }`: rejects a message
 * when a string value (not a key) in scope — anywhere in data, or under one of `fields` — matches
 * one of the patterns (JavaScript RegExp syntax, `flags` from i, m, s, u, v).
 *
 * Guarding against catastrophic regexes: JavaScript's regex engine backtracks, and a test cannot
 * be interrupted, so the cost of a scan is bounded three ways. Patterns are compiled once, when
 * the config loads. A rule scans at most `maxScanChars` characters (default 262,144) of in-scope
 * text per message, over all strings; more text rejects the message (rather than letting a match
 * hide behind padding). And patterns of the two shapes that turn a linear scan into a runaway one
 * are refused unless `allowSlowPatterns: true`: a repeated group that itself holds a quantifier
 * (`(a+)+`, `(\w+\s?)*`; exponential) and a leading `.*` / `.+` (redundant in a search, and
 * quadratic). These checks are heuristics: other patterns can still be quadratic in the length of
 * one string (`a.*b.*c`), so keep `maxScanChars` as small as your texts allow.
 */
const deny: VerificationRuleFactory = (options, path) => {
  const o = mappingOptions(options, path, ['patterns', 'flags', 'fields', 'maxScanChars', 'allowSlowPatterns']);
  const flags = o.flags ?? '';
  if (typeof flags !== 'string' || !/^[imsuv]*$/.test(flags) || new Set(flags).size !== flags.length) {
    throw new ConfigError(`must be a string of RegExp flags from i, m, s, u, v, got ${show(flags)}`, {
      path: `${path}.flags`,
    });
  }
  const allowSlow = o.allowSlowPatterns ?? false;
  if (typeof allowSlow !== 'boolean') {
    throw new ConfigError(`must be a boolean, got ${show(allowSlow)}`, { path: `${path}.allowSlowPatterns` });
  }
  if (o.patterns === undefined) throw new ConfigError('is required', { path: `${path}.patterns` });
  const regexes = stringList(o.patterns, `${path}.patterns`).map((source, i) => {
    const at = `${path}.patterns[${i}]`;
    if (INLINE_FLAGS.test(source)) {
      throw new ConfigError(`inline flags such as (?i) are not supported by JavaScript; use the flags option`, {
        path: at,
      });
    }
    let re: RegExp;
    try {
      re = new RegExp(source, flags);
    } catch (err) {
      throw new ConfigError(`invalid regular expression: ${err instanceof Error ? err.message : String(err)}`, {
        path: at,
        cause: err,
      });
    }
    if (!allowSlow && hasNestedQuantifier(source)) {
      throw new ConfigError(
        'a repeated group holding a quantifier can backtrack catastrophically; rewrite it or set allowSlowPatterns',
        { path: at },
      );
    }
    if (!allowSlow && LEADING_DOT_STAR.test(source)) {
      throw new ConfigError('a leading .* or .+ adds nothing to a search and makes it quadratic; drop it', {
        path: at,
      });
    }
    return re;
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

/** The rules every pipeline knows, by the name the config uses. */
export const BUILT_IN_RULES: Readonly<Record<string, VerificationRuleFactory>> = Object.freeze({
  maxBytes,
  maxDepth,
  maxKeys,
  deny,
  redact,
});
