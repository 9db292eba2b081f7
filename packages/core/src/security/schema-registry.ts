// The named export: the package is CommonJS, and under NodeNext the default import is typed as
// the module object rather than the class (at run time both are the class).
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import { type Envelope, withAttributes } from '../envelope.js';
import { ConfigError, ValidationError } from '../errors.js';
import { type Logger, stderrLogger } from '../logger.js';
import { type CompatibilityIssue, compatibilityIssues, type JsonSchema, jsonEqual } from './schema-compatibility.js';
import { type DeprecatedUse, SchemaDeprecations } from './schema-deprecations.js';
import { compareVersions, type ParsedVersion, parseVersion, type SchemaVersionInput } from './schema-version.js';
import { type SchemaViolation, violationError, violationOf } from './schema-violation.js';

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

interface Version {
  readonly info: RegisteredSchema;
  readonly parsed: ParsedVersion;
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
  /** Per topic, the types registered for it (see typesOn). */
  readonly #topicTypes = new Map<string, Set<string>>();
  /** type → from-version → to-version → upcaster. */
  readonly #upcasters = new Map<string, Map<string, Map<string, Upcaster>>>();
  readonly #deprecations: SchemaDeprecations;

  constructor(options: SchemaRegistryOptions = {}) {
    this.#logger = options.logger ?? stderrLogger;
    this.#options = {
      allErrors: options.allErrors ?? SCHEMA_REGISTRY_DEFAULTS.allErrors,
      strict: options.strict,
    };
    this.#ajv = this.#newAjv(false);
    this.#deprecations = new SchemaDeprecations(this.#logger);
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
    const parsed = parseVersion(registration.version, 'version');
    const version = parsed.text;
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
    const info: RegisteredSchema = Object.freeze({
      type,
      version,
      schema,
      deprecated: registration.deprecated !== undefined && registration.deprecated !== false,
      ...(typeof registration.deprecated === 'string' ? { deprecationNote: registration.deprecated } : {}),
      ...(registration.topic !== undefined ? { topic: registration.topic } : {}),
      ...(registration.description !== undefined ? { description: registration.description } : {}),
    });
    const contract = this.#contracts.get(type);
    const clash = contract?.versions.find((v) => compareVersions(v.parsed, parsed) === 0 && v.info.version !== version);
    if (clash) throw new ConfigError(`${version} is the same version as ${clash.info.version}`, { path: 'version' });
    const below = contract?.versions.filter((v) => compareVersions(v.parsed, parsed) < 0).at(-1);
    const above = contract?.versions.find((v) => compareVersions(v.parsed, parsed) > 0);
    const bridge = this.#bridgeOf(type, parsed, below, registration.upcastFrom);

    const existing = contract?.byVersion.get(version);
    if (existing && jsonEqual(existing.info.schema, schema)) {
      replaceVersion(existing, contract as Contract, { ...existing, info });
      if (bridge) this.#addUpcaster(type, bridge.from, version, bridge.upcast);
      this.#bind(registration.topic ?? type, type);
      return info;
    }
    if (existing && !force) {
      throw new ConfigError(`${type} version ${version} is already registered with another schema`, {
        path: 'schema',
      });
    }
    if (!force) {
      const issues: (CompatibilityIssue & { readonly against: string })[] = [];
      const check = (older: JsonSchema, newer: JsonSchema, against: string) => {
        for (const i of compatibilityIssues(older, newer)) issues.push({ ...i, against });
      };
      if (below && bridge?.from !== below.info.version && !this.#upcasterOf(type, below.info.version, version)) {
        check(below.info.schema, schema, below.info.version);
      }
      if (above && !this.#upcasterOf(type, version, above.info.version)) {
        check(schema, above.info.schema, above.info.version);
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
    const entry: Version = { info, parsed, validate, hasDefaults: hasDefaults(schema) };
    if (contract) replaceVersion(existing, contract, entry);
    else this.#contracts.set(type, { versions: [entry], byVersion: new Map([[version, entry]]) });
    if (bridge) this.#addUpcaster(type, bridge.from, version, bridge.upcast);
    this.#bind(registration.topic ?? type, type);
    return info;
  }

  /** Records that messages of `type` travel on `topic`. */
  #bind(topic: string, type: string): void {
    let types = this.#topicTypes.get(topic);
    if (!types) {
      types = new Set();
      this.#topicTypes.set(topic, types);
    }
    types.add(type);
  }

  /**
   * The types registered for `topic` (a registration's `topic`, by default its type), or
   * undefined when none is. Schema validation refuses any other type on such a topic, so that a
   * publisher cannot skip a topic's contract by naming a type that has none.
   */
  typesOn(topic: string): ReadonlySet<string> | undefined {
    return this.#topicTypes.get(topic);
  }

  /** The upcaster a registration brings (checked, not added yet). */
  #bridgeOf(
    type: string,
    to: ParsedVersion,
    below: Version | undefined,
    upcastFrom: SchemaRegistration['upcastFrom'],
  ): { from: string; upcast: Upcaster } | undefined {
    if (upcastFrom === undefined) return undefined;
    let from: string;
    let upcast: Upcaster;
    if (typeof upcastFrom === 'function') {
      if (!below) throw new ConfigError('there is no earlier version to upcast from', { path: 'upcastFrom' });
      from = below.info.version;
      upcast = upcastFrom;
    } else {
      const parsed = parseVersion(upcastFrom?.version, 'upcastFrom.version');
      if (compareVersions(parsed, to) >= 0) {
        throw new ConfigError(`must be earlier than ${to.text}`, { path: 'upcastFrom.version' });
      }
      from = parsed.text;
      upcast = upcastFrom.upcast;
      if (typeof upcast !== 'function') throw new ConfigError('must be a function', { path: 'upcastFrom.upcast' });
    }
    const present = this.#upcasterOf(type, from, to.text);
    if (present !== undefined && present !== upcast) {
      throw new ConfigError(`another upcaster of ${type} from ${from} to ${to.text} exists`, { path: 'upcastFrom' });
    }
    return { from, upcast };
  }

  /**
   * Registers an upcaster from `fromVersion` to the later `toVersion`. Either may be registered
   * later; register it before a breaking `toVersion` so that the compatibility check lets it in.
   */
  upcaster(type: string, fromVersion: SchemaVersionInput, toVersion: SchemaVersionInput, upcast: Upcaster): this {
    if (typeof type !== 'string' || type === '') throw new ConfigError('must be a non-empty string', { path: 'type' });
    const from = parseVersion(fromVersion, 'fromVersion');
    const to = parseVersion(toVersion, 'toVersion');
    if (compareVersions(from, to) >= 0) throw new ConfigError(`must be later than ${from.text}`, { path: 'toVersion' });
    if (typeof upcast !== 'function') throw new ConfigError('must be a function', { path: 'upcast' });
    this.#addUpcaster(type, from.text, to.text, upcast);
    return this;
  }

  #addUpcaster(type: string, from: string, to: string, upcast: Upcaster): void {
    const byFrom = this.#upcasters.get(type) ?? new Map<string, Map<string, Upcaster>>();
    this.#upcasters.set(type, byFrom);
    const byTo = byFrom.get(from) ?? new Map<string, Upcaster>();
    byFrom.set(from, byTo);
    const present = byTo.get(to);
    if (present === upcast) return; // the same registration again
    if (present) throw new ConfigError(`another upcaster of ${type} from ${from} to ${to} exists`, { path: 'upcast' });
    byTo.set(to, upcast);
  }

  #upcasterOf(type: string, from: string, to: string): Upcaster | undefined {
    return this.#upcasters.get(type)?.get(from)?.get(to);
  }

  /** Marks a registered version deprecated (`note`: what to use instead). */
  deprecate(type: string, version: SchemaVersionInput, note?: string): RegisteredSchema {
    const entry = this.#entry(type, version);
    if (!entry) throw new ConfigError(`${type} ${String(version)} is not registered`, { path: 'version' });
    const info: RegisteredSchema = Object.freeze({
      ...entry.info,
      deprecated: true,
      ...(note !== undefined ? { deprecationNote: note } : {}),
    });
    replaceVersion(entry, this.#contracts.get(type) as Contract, { ...entry, info });
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
    return violationOf(type, entry.info.version, entry.validate, data);
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
   * gets its target's defaults filled in (on a copy) and is validated against it. Returns the
   * same envelope when it is already at the latest version, else a new one with the migrated
   * `data` and `schemaversion`. Throws ValidationError (`data`: {@link SchemaViolation}) when a
   * step fails.
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
        const data: SchemaViolation = { problem: 'upcast-failed', type, schemaversion: to.info.version, errors: [] };
        const why = err instanceof Error ? err.message : String(err);
        throw new ValidationError(`upcasting ${type} ${from} to ${to.info.version} failed: ${why}`, {
          cause: err,
          data,
        });
      }
      const validate = to.hasDefaults ? this.#fillingOf(to) : to.validate;
      const failed = violationOf(type, to.info.version, validate, data);
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
    if (entry?.info.deprecated) this.#deprecations.record(type, entry.info.version, side, entry.info.deprecationNote);
  }

  /** Uses of deprecated versions so far (each warned about once). */
  deprecatedUses(): DeprecatedUse[] {
    return this.#deprecations.list();
  }
}

/** A new, empty schema registry. */
export function createSchemaRegistry(options?: SchemaRegistryOptions): SchemaRegistry {
  return new SchemaRegistry(options);
}

/** Puts `entry` in place of `existing`, or in order among the versions. */
function replaceVersion(existing: Version | undefined, contract: Contract, entry: Version): void {
  if (existing) contract.versions[contract.versions.indexOf(existing)] = entry;
  else {
    contract.versions.push(entry);
    contract.versions.sort((a, b) => compareVersions(a.parsed, b.parsed));
  }
  contract.byVersion.set(entry.info.version, entry);
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
