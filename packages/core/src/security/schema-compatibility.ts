/**
 * Backward compatibility between two JSON Schema versions of one message type: may a consumer
 * that validates with the newer schema accept every payload the older one accepted? A change is
 * breaking when some payload valid under the older schema could fail the newer one: a property
 * newly required without a `default` (with one, the consumer fills it in while migrating), a
 * property removed from a closed object, a type narrowed or changed, an enum value removed or a
 * `const` changed, a numeric, length, count or `multipleOf` bound tightened, a pattern added or
 * changed, `items` or `additionalProperties` constrained. Widening anything is compatible.
 *
 * The check is structural, keyword by keyword, in parallel over both schemas (recursing through
 * `properties`, `additionalProperties` and `items`); it never runs a validator.
 *
 * Limits (each errs towards reporting, never towards silence, except the first):
 * - A property added to an open object (no `additionalProperties: false`) is accepted, although
 *   an old writer could in theory have sent an unrelated value under that name.
 * - `pattern`: any new or changed pattern is reported; regular languages are not compared.
 * - Composition and references (`allOf`, `anyOf`, `oneOf`, `not`, `if`/`then`/`else`, `$ref`,
 *   `$defs`, `prefixItems`, `patternProperties`, `dependentRequired`, `unevaluated*`, `contains`,
 *   `propertyNames` …) are not analysed: any difference in them is reported as `keyword-changed`,
 *   even a widening.
 * - Old `enum`/`const` values are checked one by one against the new node's scalar keywords; the
 *   properties of object values inside an enum are not.
 * - `format` is an annotation here (the registry does not assert formats) and is ignored.
 */

/** Why a newer version breaks readers of data written under an older one. */
export type CompatibilityRule =
  /** The new schema is `false` (accepts nothing). */
  | 'schema-false'
  /** A JSON type the old schema allowed is no longer allowed. */
  | 'type-narrowed'
  /** An enum value was removed, or an enum was introduced. */
  | 'enum-narrowed'
  /** A `const` was introduced or changed. */
  | 'const-changed'
  /** A property became required and has no `default` to fill it in. */
  | 'required-added'
  /** A property was removed while `additionalProperties` is false (or a schema it fails). */
  | 'property-removed'
  /** `additionalProperties` went from open to false or to a schema. */
  | 'additional-properties-narrowed'
  /** `items` went from any to a schema. */
  | 'items-narrowed'
  /** A min/max bound (number, length, item or property count) or `multipleOf` became stricter. */
  | 'bound-tightened'
  /** `pattern` was added or changed. */
  | 'pattern-changed'
  /** A keyword the check does not analyse changed (see the limits above). */
  | 'keyword-changed';

export interface CompatibilityIssue {
  /** Where, as a JSON Pointer into the payload; `*` stands for any array item or any other property. */
  readonly path: string;
  readonly rule: CompatibilityRule;
  readonly message: string;
}

/** A JSON Schema (2020-12): an object or a boolean. */
export type JsonSchema = boolean | { readonly [keyword: string]: unknown };

type Node = { readonly [keyword: string]: unknown };

/** Keywords that never change what validates. */
const ANNOTATIONS = new Set([
  '$schema',
  '$id',
  '$comment',
  '$anchor',
  'title',
  'description',
  'default',
  'examples',
  'deprecated',
  'readOnly',
  'writeOnly',
  'format',
  'contentEncoding',
  'contentMediaType',
  'contentSchema',
]);

/** Keywords the check compares structurally. */
const CHECKED = new Set([
  'type',
  'enum',
  'const',
  'properties',
  'required',
  'additionalProperties',
  'items',
  'minimum',
  'maximum',
  'exclusiveMinimum',
  'exclusiveMaximum',
  'multipleOf',
  'minLength',
  'maxLength',
  'pattern',
  'minItems',
  'maxItems',
  'uniqueItems',
  'minProperties',
  'maxProperties',
]);

/**
 * The reasons why a consumer on `newer` could refuse a payload valid under `older`; empty when the
 * check finds none. See the module comment for what it does not see.
 */
export function compatibilityIssues(older: JsonSchema, newer: JsonSchema): CompatibilityIssue[] {
  const issues: CompatibilityIssue[] = [];
  compare(older, newer, '', issues);
  return issues;
}

function compare(older: JsonSchema, newer: JsonSchema, path: string, issues: CompatibilityIssue[]): void {
  if (newer === true || older === false || jsonEqual(older, newer)) return;
  const at = path || '/';
  const issue = (rule: CompatibilityRule, message: string) => issues.push({ path: at, rule, message });
  if (newer === false) {
    issue('schema-false', 'the new schema accepts nothing here');
    return;
  }
  const o: Node = older === true ? {} : older;
  const n: Node = newer;

  const domain = finiteDomain(o);
  if (domain !== undefined) {
    // Only these values were ever written here: check each against the new keywords.
    for (const value of domain) {
      const refusal = refusalOf(n, value);
      if (refusal) issue(refusal.rule, `${JSON.stringify(value)}, valid before, is refused: ${refusal.why}`);
    }
    uncheckedKeywords(o, n, issue);
    return;
  }

  const oldTypes = typesOf(o);
  const newTypes = typesOf(n);
  if (newTypes !== undefined) {
    const lost = oldTypes === undefined ? ['any type'] : [...oldTypes].filter((t) => !typeAccepts(newTypes, t));
    if (lost.length > 0) issue('type-narrowed', `type narrowed: ${lost.join(', ')} no longer accepted`);
  }
  if (n.enum !== undefined) issue('enum-narrowed', `now restricted to ${JSON.stringify(n.enum)}`);
  if (n.const !== undefined) issue('const-changed', `now restricted to the constant ${JSON.stringify(n.const)}`);

  const may = (t: string) => oldTypes === undefined || oldTypes.has(t) || (t === 'number' && oldTypes.has('integer'));
  if (may('number')) {
    tighterLower(lowerBound(o), lowerBound(n), issue);
    tighterUpper(upperBound(o), upperBound(n), issue);
    if (typeof n.multipleOf === 'number') {
      const ratio = typeof o.multipleOf === 'number' ? o.multipleOf / n.multipleOf : Number.NaN;
      if (!Number.isInteger(ratio)) issue('bound-tightened', `multipleOf ${n.multipleOf} is stricter`);
    }
  }
  if (may('string')) {
    counts(o, n, 'minLength', 'maxLength', issue);
    if (typeof n.pattern === 'string' && n.pattern !== o.pattern) {
      issue('pattern-changed', `pattern ${JSON.stringify(n.pattern)} (was ${JSON.stringify(o.pattern ?? null)})`);
    }
  }
  if (may('array')) {
    counts(o, n, 'minItems', 'maxItems', issue);
    if (n.uniqueItems === true && o.uniqueItems !== true) issue('bound-tightened', 'items must now be unique');
    const oldItems = o.items as JsonSchema | undefined;
    const newItems = n.items as JsonSchema | undefined;
    if (newItems !== undefined && newItems !== true) {
      if (oldItems === undefined || oldItems === true) issue('items-narrowed', 'items were unconstrained');
      else compare(oldItems, newItems, `${path}/*`, issues);
    }
  }
  if (may('object')) {
    counts(o, n, 'minProperties', 'maxProperties', issue);
    compareObjects(o, n, path, issues, issue);
  }
  uncheckedKeywords(o, n, issue);
}

function compareObjects(
  o: Node,
  n: Node,
  path: string,
  issues: CompatibilityIssue[],
  issue: (rule: CompatibilityRule, message: string) => void,
): void {
  const oldProps = (o.properties ?? {}) as Record<string, JsonSchema>;
  const newProps = (n.properties ?? {}) as Record<string, JsonSchema>;
  const oldRest = (o.additionalProperties ?? true) as JsonSchema;
  const newRest = (n.additionalProperties ?? true) as JsonSchema;
  const oldRequired = new Set(Array.isArray(o.required) ? (o.required as string[]) : []);
  for (const name of Array.isArray(n.required) ? (n.required as string[]) : []) {
    if (oldRequired.has(name)) continue;
    const prop = newProps[name];
    const hasDefault = typeof prop === 'object' && prop !== null && 'default' in prop;
    if (!hasDefault) issue('required-added', `property '${name}' is now required and has no default`);
  }
  for (const [name, oldProp] of Object.entries(oldProps)) {
    const sub = `${path}/${pointerToken(name)}`;
    const newProp = newProps[name];
    if (newProp !== undefined) compare(oldProp, newProp, sub, issues);
    else if (newRest === false) {
      if (oldProp !== false)
        issue('property-removed', `property '${name}' was removed and additionalProperties is false`);
    } else compare(oldProp, newRest, sub, issues);
  }
  for (const [name, newProp] of Object.entries(newProps)) {
    // Old data had no such property when the old object was closed; on an open one, the added
    // property is assumed new (see the module comment).
    if (name in oldProps || oldRest === false || oldRest === true) continue;
    compare(oldRest, newProp, `${path}/${pointerToken(name)}`, issues);
  }
  if (newRest !== true && oldRest !== false) {
    if (oldRest === true) issue('additional-properties-narrowed', 'additionalProperties were open');
    else compare(oldRest, newRest, `${path}/*`, issues);
  }
}

function uncheckedKeywords(o: Node, n: Node, issue: (rule: CompatibilityRule, message: string) => void): void {
  for (const key of new Set([...Object.keys(o), ...Object.keys(n)])) {
    if (CHECKED.has(key) || ANNOTATIONS.has(key)) continue;
    if (!jsonEqual(o[key], n[key])) issue('keyword-changed', `'${key}' changed; the check cannot prove it compatible`);
  }
}

interface Bound {
  readonly value: number;
  readonly exclusive: boolean;
}

function lowerBound(s: Node): Bound | undefined {
  return bound(s.minimum, s.exclusiveMinimum, (a, b) => a > b);
}
function upperBound(s: Node): Bound | undefined {
  return bound(s.maximum, s.exclusiveMaximum, (a, b) => a < b);
}
/** The tighter of an inclusive and an exclusive bound; `stricter(a, b)` says whether a is tighter than b. */
function bound(inclusive: unknown, exclusive: unknown, stricter: (a: number, b: number) => boolean) {
  const inc = typeof inclusive === 'number' ? { value: inclusive, exclusive: false } : undefined;
  const exc = typeof exclusive === 'number' ? { value: exclusive, exclusive: true } : undefined;
  if (!inc) return exc;
  if (!exc) return inc;
  return stricter(inc.value, exc.value) ? inc : exc;
}
function tighterLower(o: Bound | undefined, n: Bound | undefined, issue: (r: CompatibilityRule, m: string) => void) {
  if (n && (!o || n.value > o.value || (n.value === o.value && n.exclusive && !o.exclusive))) {
    issue('bound-tightened', `lower bound ${describeBound(n, '>')} is stricter than ${describeBound(o, '>')}`);
  }
}
function tighterUpper(o: Bound | undefined, n: Bound | undefined, issue: (r: CompatibilityRule, m: string) => void) {
  if (n && (!o || n.value < o.value || (n.value === o.value && n.exclusive && !o.exclusive))) {
    issue('bound-tightened', `upper bound ${describeBound(n, '<')} is stricter than ${describeBound(o, '<')}`);
  }
}
function describeBound(b: Bound | undefined, op: '<' | '>'): string {
  return b ? `${op}${b.exclusive ? '' : '='} ${b.value}` : 'none';
}

/** A min/max count pair (minLength/maxLength …): a raised minimum or lowered maximum is stricter. */
function counts(
  o: Node,
  n: Node,
  min: string,
  max: string,
  issue: (rule: CompatibilityRule, message: string) => void,
): void {
  const num = (v: unknown, fallback: number) => (typeof v === 'number' ? v : fallback);
  if (num(n[min], 0) > num(o[min], 0)) issue('bound-tightened', `${min} raised to ${n[min]}`);
  if (num(n[max], Infinity) < num(o[max], Infinity)) issue('bound-tightened', `${max} lowered to ${n[max]}`);
}

function typesOf(s: Node): Set<string> | undefined {
  if (typeof s.type === 'string') return new Set([s.type]);
  if (Array.isArray(s.type)) return new Set(s.type as string[]);
  return undefined;
}

function typeAccepts(types: Set<string> | undefined, type: string): boolean {
  return types === undefined || types.has(type) || (type === 'integer' && types.has('number'));
}

function typeOfValue(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v;
}

/** The values a node allows when they are few enough to list (`const`, `enum`, or only booleans/null). */
function finiteDomain(s: Node): readonly unknown[] | undefined {
  if ('const' in s) return [s.const];
  if (Array.isArray(s.enum)) return s.enum;
  const types = typesOf(s);
  if (types === undefined || types.size === 0) return undefined;
  const values: unknown[] = [];
  for (const t of types) {
    if (t === 'null') values.push(null);
    else if (t === 'boolean') values.push(false, true);
    else return undefined;
  }
  return values;
}

/** Why the scalar keywords of `s` refuse `value`, if they do. */
function refusalOf(s: Node, value: unknown): { rule: CompatibilityRule; why: string } | undefined {
  const type = typeOfValue(value);
  if (!typeAccepts(typesOf(s), type)) return { rule: 'type-narrowed', why: `type ${type} is not accepted` };
  if (Array.isArray(s.enum) && !s.enum.some((e) => jsonEqual(e, value)))
    return { rule: 'enum-narrowed', why: 'not in enum' };
  if ('const' in s && !jsonEqual(s.const, value)) return { rule: 'const-changed', why: 'not the constant' };
  const tightened = (why: string) => ({ rule: 'bound-tightened' as const, why });
  if (typeof value === 'number') {
    const lo = lowerBound(s);
    const hi = upperBound(s);
    if (lo && (value < lo.value || (lo.exclusive && value === lo.value))) return tightened('below the lower bound');
    if (hi && (value > hi.value || (hi.exclusive && value === hi.value))) return tightened('above the upper bound');
    if (typeof s.multipleOf === 'number' && !Number.isInteger(value / s.multipleOf)) return tightened('not a multiple');
  }
  if (typeof value === 'string') {
    const length = [...value].length;
    if (typeof s.minLength === 'number' && length < s.minLength) return tightened('shorter than minLength');
    if (typeof s.maxLength === 'number' && length > s.maxLength) return tightened('longer than maxLength');
    if (typeof s.pattern === 'string' && !new RegExp(s.pattern, 'u').test(value)) {
      return { rule: 'pattern-changed', why: 'does not match the pattern' };
    }
  }
  return undefined;
}

function pointerToken(name: string): string {
  return name.replaceAll('~', '~0').replaceAll('/', '~1');
}

/** Deep equality of JSON values (object key order ignored). */
export function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) {
    const other = b as unknown[];
    return a.length === other.length && a.every((v, i) => jsonEqual(v, other[i]));
  }
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  const bo = b as Record<string, unknown>;
  return ka.every((k) => Object.hasOwn(bo, k) && jsonEqual((a as Record<string, unknown>)[k], bo[k]));
}
