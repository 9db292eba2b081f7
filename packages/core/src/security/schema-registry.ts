// The named export: the package is CommonJS, and under NodeNext the default import is typed as
// the module object rather than the class (at run time both are the class).
import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
import { type Envelope, withAttributes } from '../envelope.js';
import { ConfigError, ValidationError } from '../errors.js';
import { type Logger, stderrLogger } from '../logger.js';
import { type CompatibilityIssue, compatibilityIssues, type JsonSchema, jsonEqual } from './schema-compatibility.js';

/** A schema version: `2`, `'2'`, `'1.3'` (dot-separated non-negative integers, compared numerically). */
export type SchemaVersionInput = string | number;

/**
 * Migrates a payload of one version to a later one. Pure and synchronous: it runs on every
 * delivery of an old message (and on replays). Return a new value rather than changing `data`.
 */
export type Upcaster = (data: unknown, envelope: Envelope) => unknown;

export interface SchemaRegistration {
  /** The message type (`Envelope.type`, which defaults to the topic). */
  readonly type: string;
  readonly version: SchemaVersionInput;
  /** A JSON Schema 2020-12 for `Envelope.data`; the registry keeps a frozen copy. */
  readonly schema: JsonSchema;
  /** Marks the version deprecated; a string says what to use instead. */
  readonly deprecated?: boolean | string;
  /**
   * An upcaster to this version: a function migrates from the previous registered version; `{ version, upcast }`
   * from another earlier one. Registered before the compatibility check, which it then bridges.
   */
  readonly upcastFrom?: Upcaster | { readonly version: SchemaVersionInput; readonly upcast: Upcaster };
  /** The topic messages of this type travel on, for the AsyncAPI export (default: the type). */
  readonly topic?: string;
  readonly description?: string;
  /**
   * Registers despite breaking changes found by the compatibility check, or replaces another
   * schema already registered under this version. Consumers on this version will refuse (dead-letter)
   * older messages it does not accept.
   */
  readonly force?: boolean;
}

/** One registered version of a message type. */
export interface RegisteredSchema {
  readonly type: string;
  /** Canonical spelling, as in `Envelope.schemaversion`. */
  readonly version: string;
  /** Deep-frozen copy of the registered schema. */
  readonly schema: JsonSchema;
  readonly deprecated: boolean;
  /** What to use instead, when the deprecation said. */
  readonly deprecationNote?: string;
  readonly topic?: string;
  readonly description?: string;
}

/** One schema error of a payload, compact: ajv's `instancePath`, `keyword` and `message`. */
export interface PayloadError {
  readonly instancePath: string;
  readonly keyword: string;
  readonly message: string;
}

/** Why a payload failed: its schema refused it, its type or version is unknown, or an upcaster threw. */
export type SchemaProblem = 'invalid' | 'unknown-type' | 'unknown-version' | 'upcast-failed';

/** What the registry found wrong with a payload; the `data` of the ValidationError it throws. */
export interface SchemaViolation {
  readonly problem: SchemaProblem;
  readonly type: string;
  /** The version checked against (for `invalid`: the one whose schema refused the payload). */
  readonly schemaversion?: string;
  /** For `invalid`, the ajv errors (at most {@link MAX_REPORTED_ERRORS}); empty otherwise. */
  readonly errors: readonly PayloadError[];
}

/** How often a deprecated version was published and consumed through the registry's users. */
export interface DeprecatedUse {
  readonly type: string;
  readonly version: string;
  readonly published: number;
  readonly consumed: number;
}

export interface SchemaRegistryOptions {
  /** Deprecation warnings and ajv's own warnings go here (default: stderr). */
  readonly logger?: Logger;
  /** Report every error of a payload rather than stop at the first (costlier on large invalid payloads). */
  readonly allErrors?: boolean;
  /**
   * ajv strict mode. Unset: ajv's default (unknown keywords refused at registration, type
   * strictness only logged); true: every strict check (`strictTypes`, `strictRequired` …) refuses;
   * false: none does.
   */
  readonly strict?: boolean;
}

export const SCHEMA_REGISTRY_DEFAULTS = Object.freeze({ allErrors: false });

/** Errors copied into a {@link SchemaViolation}; the rest are dropped. */
export const MAX_REPORTED_ERRORS = 20;

const VERSION = /^(0|[1-9]\d*)(\.(0|[1-9]\d*))*$/;

interface Version {
  readonly info: RegisteredSchema;
  /** Numeric segments, for ordering. */
  readonly key: readonly number[];
  readonly validate: ValidateFunction;
  /** Whether the schema has `default`s, which are filled in when older data is carried over to it. */
  readonly hasDefaults: boolean;
  filling?: ValidateFunction;
}

interface Contract {
  /** Ascending by version. */
  readonly versions: Version[];
  readonly byVersion: Map<string, Version>;
}

/**
 * Versioned JSON Schemas (2020-12, validated with ajv) per message type, with upcasters between
 * versions, a backward-compatibility check on registration and deprecation accounting. Schemas are
 * compiled once, on registration. Use it through {@link schemaValidation} on a bus, or directly.
 */
export class SchemaRegistry {
  readonly #logger: Logger;
  readonly #options: { readonly allErrors: boolean; readonly strict: boolean | undefined };
  readonly #ajv: Ajv2020;
  /** Compiles the schemas older data is carried over to: fills in defaults (on a copy). Made on first use. */
  #fillingAjv: Ajv2020 | undefined;
  readonly #contracts = new Map<string, Contract>();
  /** type → from-version → to-version → upcaster. */
  readonly #upcasters = new Map<string, Map<string, Map<string, Upcaster>>>();
  readonly #uses = new Map<string, { type: string; version: string; published: number; consumed: number }>();

  constructor(options: SchemaRegistryOptions = {}) {
    this.#logger = options.logger ?? stderrLogger;
    this.#options = {
      allErrors: options.allErrors ?? SCHEMA_REGISTRY_DEFAULTS.allErrors,
      strict: options.strict,
    };
    this.#ajv = this.#newAjv(false);
  }

  #newAjv(useDefaults: boolean): Ajv2020 {
    const logger = this.#logger;
    return new Ajv2020({
      allErrors: this.#options.allErrors,
      ...(this.#options.strict === undefined ? {} : { strict: this.#options.strict }),
      useDefaults,
      // Formats are annotations: asserting them needs ajv-formats, which core does not carry.
      validateFormats: false,
      logger: {
        log: (...args: unknown[]) => logger.debug({ component: 'schema-registry' }, args.join(' ')),
        warn: (...args: unknown[]) => logger.warn({ component: 'schema-registry' }, args.join(' ')),
        error: (...args: unknown[]) => logger.error({ component: 'schema-registry' }, args.join(' ')),
      },
    });
  }

  /**
   * Registers a schema version. Throws ConfigError for invalid input, a schema ajv cannot compile,
   * another schema already under this version, or (without `force`) changes that break readers of
   * the neighbouring versions (`data.issues`; see {@link compatibilityIssues}) unless an upcaster
   * bridges them. Registering the same schema again only updates the other fields.
   */
  register(registration: SchemaRegistration): RegisteredSchema {
    const { type, force = false } = registration;
    if (typeof type !== 'string' || type === '') throw new ConfigError('must be a non-empty string', { path: 'type' });
    const { text: version, key } = parseVersion(registration.version, 'version');
    const raw = registration.schema;
    if (typeof raw !== 'boolean' && (typeof raw !== 'object' || raw === null || Array.isArray(raw))) {
      throw new ConfigError('must be a JSON Schema (an object or a boolean)', { path: 'schema' });
    }
    let schema: JsonSchema;
    try {
      schema = structuredClone(raw);
    } catch (err) {
      throw new ConfigError('must be plain JSON', { path: 'schema', cause: err });
    }
    const info = freezeInfo({
      type,
      version,
      schema,
      deprecated: registration.deprecated !== undefined && registration.deprecated !== false,
      ...(typeof registration.deprecated === 'string' ? { deprecationNote: registration.deprecated } : {}),
      ...(registration.topic !== undefined ? { topic: registration.topic } : {}),
      ...(registration.description !== undefined ? { description: registration.description } : {}),
    });
    const contract = this.#contracts.get(type);
    const existing = contract?.byVersion.get(version);
    if (existing && jsonEqual(existing.info.schema, schema)) {
      const updated: Version = { ...existing, info };
      replaceVersion(contract as Contract, updated);
      return info;
    }
    if (existing && !force) {
      throw new ConfigError(`${type} version ${version} is already registered with another schema`, {
        path: 'schema',
      });
    }
    const clash = contract?.versions.find((v) => compareKeys(v.key, key) === 0 && v.info.version !== version);
    if (clash) throw new ConfigError(`${version} is the same version as ${clash.info.version}`, { path: 'version' });

    const below = contract?.versions.filter((v) => compareKeys(v.key, key) < 0).at(-1);
    const above = contract?.versions.find((v) => compareKeys(v.key, key) > 0);
    const upcastFrom = registration.upcastFrom;
    let bridge: { from: string; upcast: Upcaster } | undefined;
    if (upcastFrom !== undefined) {
      const from =
        typeof upcastFrom === 'function' ? below?.info.version : parseVersion(upcastFrom.version, 'upcastFrom.version');
      const upcast = typeof upcastFrom === 'function' ? upcastFrom : upcastFrom.upcast;
      if (from === undefined)
        throw new ConfigError('there is no earlier version to upcast from', { path: 'upcastFrom' });
      if (typeof upcast !== 'function') throw new ConfigError('must be a function', { path: 'upcastFrom.upcast' });
      const fromText = typeof from === 'string' ? from : from.text;
      if (typeof from !== 'string' && compareKeys(from.key, key) >= 0) {
        throw new ConfigError(`must be earlier than ${version}`, { path: 'upcastFrom.version' });
      }
      bridge = { from: fromText, upcast };
    }

    if (!force) {
      const issues: (CompatibilityIssue & { readonly against: string })[] = [];
      if (below && !(bridge?.from === below.info.version) && !this.#upcasterOf(type, below.info.version, version)) {
        for (const i of compatibilityIssues(below.info.schema, schema))
          issues.push({ ...i, against: below.info.version });
      }
      if (above && !this.#upcasterOf(type, version, above.info.version)) {
        for (const i of compatibilityIssues(schema, above.info.schema))
          issues.push({ ...i, against: above.info.version });
      }
      if (issues.length > 0) {
        const list = issues.map((i) => `${i.path} ${i.message} (vs ${i.against})`).join('; ');
        throw new ConfigError(`${type} version ${version} breaks compatibility: ${list}`, {
          path: 'schema',
          data: { path: 'schema', type, version, issues },
        });
      }
    }

    if (existing) {
      // A replaced schema leaves ajv's caches, so that its `$id` can be used again.
      this.#ajv.removeSchema(existing.info.schema as object);
      const id = typeof existing.info.schema === 'object' ? existing.info.schema.$id : undefined;
      if (typeof id === 'string') this.#fillingAjv?.removeSchema(id);
    }
    let validate: ValidateFunction;
    try {
      validate = this.#ajv.compile(schema);
    } catch (err) {
      throw new ConfigError(`cannot compile the schema of ${type} ${version}: ${(err as Error).message}`, {
        path: 'schema',
        cause: err,
      });
    }
    deepFreeze(schema);
    const entry: Version = { info, key, validate, hasDefaults: hasDefaults(schema) };
    if (contract) replaceVersion(contract, entry);
    else this.#contracts.set(type, { versions: [entry], byVersion: new Map([[version, entry]]) });
    if (bridge) this.#addUpcaster(type, bridge.from, version, bridge.upcast);
    return info;
  }

  /**
   * Registers an upcaster from `fromVersion` to the later `toVersion`. Either may be registered
   * later; register it before a breaking `toVersion` so that the compatibility check lets it in.
   */
  upcaster(type: string, fromVersion: SchemaVersionInput, toVersion: SchemaVersionInput, upcast: Upcaster): this {
    if (typeof type !== 'string' || type === '') throw new ConfigError('must be a non-empty string', { path: 'type' });
    const from = parseVersion(fromVersion, 'fromVersion');
    const to = parseVersion(toVersion, 'toVersion');
    if (compareKeys(from.key, to.key) >= 0)
      throw new ConfigError(`must be later than ${from.text}`, { path: 'toVersion' });
    if (typeof upcast !== 'function') throw new ConfigError('must be a function', { path: 'upcast' });
    this.#addUpcaster(type, from.text, to.text, upcast);
    return this;
  }

  #addUpcaster(type: string, from: string, to: string, upcast: Upcaster): void {
    const byFrom = this.#upcasters.get(type) ?? new Map<string, Map<string, Upcaster>>();
    this.#upcasters.set(type, byFrom);
    const byTo = byFrom.get(from) ?? new Map<string, Upcaster>();
    byFrom.set(from, byTo);
    if (byTo.has(to)) throw new ConfigError(`an upcaster of ${type} from ${from} to ${to} exists`, { path: 'upcast' });
    byTo.set(to, upcast);
  }

  #upcasterOf(type: string, from: string, to: string): Upcaster | undefined {
    return this.#upcasters.get(type)?.get(from)?.get(to);
  }

  /** Marks a registered version deprecated (`note`: what to use instead). */
  deprecate(type: string, version: SchemaVersionInput, note?: string): RegisteredSchema {
    const entry = this.#entry(type, version);
    if (!entry) throw new ConfigError(`${type} ${String(version)} is not registered`, { path: 'version' });
    const info = freezeInfo({
      ...entry.info,
      deprecated: true,
      ...(note !== undefined ? { deprecationNote: note } : {}),
    });
    replaceVersion(this.#contracts.get(type) as Contract, { ...entry, info });
    return info;
  }

  get(type: string, version: SchemaVersionInput): RegisteredSchema | undefined {
    return this.#entry(type, version)?.info;
  }

  /** The highest registered version of `type`. */
  latest(type: string): RegisteredSchema | undefined {
    return this.#contracts.get(type)?.versions.at(-1)?.info;
  }

  /** The registered versions of `type`, oldest first. */
  versions(type: string): string[] {
    return this.#contracts.get(type)?.versions.map((v) => v.info.version) ?? [];
  }

  /** The message types with at least one registered version. */
  types(): string[] {
    return [...this.#contracts.keys()];
  }

  has(type: string): boolean {
    return this.#contracts.has(type);
  }

  #entry(type: string, version: SchemaVersionInput): Version | undefined {
    const contract = this.#contracts.get(type);
    if (!contract) return undefined;
    const text = typeof version === 'number' ? String(version) : version;
    return contract.byVersion.get(text);
  }

  /**
   * What is wrong with `data` as a payload of `type` at `version` (the latest when undefined), or
   * undefined if nothing is. Never throws.
   */
  validate(type: string, version: string | undefined, data: unknown): SchemaViolation | undefined {
    const contract = this.#contracts.get(type);
    if (!contract) return { problem: 'unknown-type', type, errors: [] };
    const entry = version === undefined ? contract.versions.at(-1) : contract.byVersion.get(version);
    if (!entry) return { problem: 'unknown-version', type, ...(version ? { schemaversion: version } : {}), errors: [] };
    return violationOf(entry, entry.validate, data);
  }

  /** Throws ValidationError (`data`: the {@link SchemaViolation}) unless `data` is valid for `type` at `version`. */
  assertValid(type: string, version: string | undefined, data: unknown): void {
    const violation = this.validate(type, version, data);
    if (violation) throw violationError(violation);
  }

  /**
   * Validates the envelope's payload against its `schemaversion` (the latest when absent) and
   * migrates it to the latest version, step by step: through an upcaster where there is one (the
   * furthest-reaching first), else carried over as it is to the next version. Each step's result
   * gets its target's defaults filled in (on a copy) and is validated against it. Returns the same envelope when it is already at the latest
   * version, else a new one with the migrated `data` and `schemaversion`. Throws ValidationError
   * (`data`: {@link SchemaViolation}) when a step fails.
   */
  upcast<T = unknown>(envelope: Envelope<T>): Envelope<T> {
    const { type } = envelope;
    const contract = this.#contracts.get(type);
    const violation = this.validate(type, envelope.schemaversion, envelope.data);
    if (violation) throw violationError(violation);
    const versions = (contract as Contract).versions;
    const latest = versions.at(-1) as Version;
    let current =
      envelope.schemaversion === undefined
        ? latest
        : ((contract as Contract).byVersion.get(envelope.schemaversion) as Version);
    if (current === latest) return envelope;
    let data: unknown = envelope.data;
    while (current !== latest) {
      const { to, upcast } = this.#stepFrom(type, versions, current);
      const from = current.info.version;
      try {
        if (upcast) data = upcast(data, envelope as Envelope);
        // Defaults are filled in on a copy: the delivered payload stays as it was.
        if (to.hasDefaults) data = structuredClone(data);
      } catch (err) {
        const v: SchemaViolation = { problem: 'upcast-failed', type, schemaversion: to.info.version, errors: [] };
        throw new ValidationError(`upcasting ${type} ${from} to ${to.info.version} failed: ${(err as Error).message}`, {
          cause: err,
          data: v,
        });
      }
      const failed = violationOf(to, to.hasDefaults ? this.#fillingOf(to) : to.validate, data);
      if (failed) throw violationError(failed, `after migrating from ${from}`);
      current = to;
    }
    return withAttributes(envelope, { data: data as T, schemaversion: latest.info.version });
  }

  /** The validator of `to` that fills in defaults; compiled on first use (from a copy: ajv may annotate it). */
  #fillingOf(to: Version): ValidateFunction {
    if (to.filling === undefined) {
      this.#fillingAjv ??= this.#newAjv(true);
      to.filling = this.#fillingAjv.compile(structuredClone(to.info.schema));
    }
    return to.filling;
  }

  /** The next step of a migration from `current`: the furthest registered upcaster target, else the next version. */
  #stepFrom(type: string, versions: readonly Version[], current: Version): { to: Version; upcast?: Upcaster } {
    const targets = this.#upcasters.get(type)?.get(current.info.version);
    if (targets) {
      for (let i = versions.length - 1; versions[i] !== current; i--) {
        const to = versions[i] as Version;
        const upcast = targets.get(to.info.version);
        if (upcast) return { to, upcast };
      }
    }
    return { to: versions[versions.indexOf(current) + 1] as Version };
  }

  /**
   * Counts a use of a version and, the first time a deprecated (type, version) is used, logs a
   * warning. Versions that are not deprecated (or not registered) are not counted.
   */
  recordUse(type: string, version: string | undefined, side: 'publish' | 'consume'): void {
    const contract = this.#contracts.get(type);
    const entry = version === undefined ? contract?.versions.at(-1) : contract?.byVersion.get(version);
    if (!entry?.info.deprecated) return;
    const id = `${type}\u0000${entry.info.version}`;
    let use = this.#uses.get(id);
    if (!use) {
      use = { type, version: entry.info.version, published: 0, consumed: 0 };
      this.#uses.set(id, use);
      this.#logger.warn(
        {
          type,
          schemaversion: entry.info.version,
          side,
          ...(entry.info.deprecationNote ? { note: entry.info.deprecationNote } : {}),
        },
        'deprecated schema version in use',
      );
    }
    if (side === 'publish') use.published++;
    else use.consumed++;
  }

  /** Uses of deprecated versions so far (each warned about once). */
  deprecatedUses(): DeprecatedUse[] {
    return [...this.#uses.values()].map((u) => ({ ...u }));
  }
}

/** A new, empty schema registry. */
export function createSchemaRegistry(options?: SchemaRegistryOptions): SchemaRegistry {
  return new SchemaRegistry(options);
}

function parseVersion(value: SchemaVersionInput, path: string): { text: string; key: number[] } {
  const text = typeof value === 'number' ? String(value) : value;
  if (typeof text !== 'string' || !VERSION.test(text) || (typeof value === 'number' && !Number.isSafeInteger(value))) {
    throw new ConfigError(`must be a non-negative integer or dot-separated integers, got ${String(value)}`, { path });
  }
  return { text, key: text.split('.').map(Number) };
}

/** Orders versions numerically, segment by segment; missing segments count as 0. */
function compareKeys(a: readonly number[], b: readonly number[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

function replaceVersion(contract: Contract, entry: Version): void {
  const i = contract.versions.findIndex((v) => v.info.version === entry.info.version);
  if (i >= 0) contract.versions[i] = entry;
  else {
    contract.versions.push(entry);
    contract.versions.sort((a, b) => compareKeys(a.key, b.key));
  }
  contract.byVersion.set(entry.info.version, entry);
}

function violationOf(entry: Version, validate: ValidateFunction, data: unknown): SchemaViolation | undefined {
  if (validate(data)) return undefined;
  return {
    problem: 'invalid',
    type: entry.info.type,
    schemaversion: entry.info.version,
    errors: (validate.errors ?? []).slice(0, MAX_REPORTED_ERRORS).map(compactError),
  };
}

function compactError(e: ErrorObject): PayloadError {
  return { instancePath: e.instancePath, keyword: e.keyword, message: e.message ?? e.keyword };
}

function violationError(v: SchemaViolation, context?: string): ValidationError {
  const what = `${v.type}${v.schemaversion === undefined ? '' : ` version ${v.schemaversion}`}`;
  const suffix = context ? ` ${context}` : '';
  let message: string;
  if (v.problem === 'unknown-type') message = `no schema is registered for message type ${v.type}`;
  else if (v.problem === 'unknown-version') message = `${what} is not registered`;
  else if (v.problem === 'upcast-failed') message = `upcasting to ${what} failed${suffix}`;
  else
    message = `payload is not a valid ${what}${suffix}: ${v.errors.map((e) => `${e.instancePath || '/'} ${e.message}`).join('; ')}`;
  return new ValidationError(message, { data: v });
}

function freezeInfo(info: RegisteredSchema): RegisteredSchema {
  return Object.freeze(info);
}

function deepFreeze(value: unknown): void {
  if (typeof value !== 'object' || value === null || Object.isFrozen(value)) return;
  Object.freeze(value);
  for (const v of Object.values(value)) deepFreeze(v);
}

function hasDefaults(schema: unknown): boolean {
  if (typeof schema !== 'object' || schema === null) return false;
  if (!Array.isArray(schema) && 'default' in schema) return true;
  return Object.values(schema).some(hasDefaults);
}
