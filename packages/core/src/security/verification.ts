import { parseDocument } from 'yaml';
import { assertPattern, type Envelope, topicMatches, withAttributes } from '../envelope.js';
import { ConfigError, PayloadTooLargeError, ValidationError } from '../errors.js';
import { type Logger, silentLogger } from '../logger.js';
import type { Middleware } from '../middleware.js';
import { GroupPatterns } from './group-patterns.js';
import { BUILT_IN_RULES, stringList } from './verification-rules.js';

/**
 * The verification pipeline: ordered, pluggable rules and sanitizers applied to messages,
 * configured from YAML and reloadable at run time.
 *
 * Config (YAML text or the same shape as an object):
 *
 * ```yaml
 * rules:
 *   - maxBytes: 65536                      # or { limit: 65536 }
 *   - maxDepth: 16                         # or { limit: 16 }
 *   - maxKeys: { total: 1000, perObject: 100, arrayLength: 1000 }
 *   - deny:
 *       patterns: ["ignore (all )?previous instructions"]
 *       flags: i                           # RegExp flags from i, m, s, u, v; no inline (?i)
 *       maxScanChars: 262144               # text scanned per message, at most (the default)
 *       fields: ["prompt", "**.text"]     # optional; default: every string in data
 *       topics: ["agents.>"]              # optional, on any rule given as a mapping
 *       allowSlowPatterns: false           # the default: refuse (a+)+ and a leading .*
 *   - redact: { fields: ["apiKey", "password", "**.token"], replacement: "[REDACTED]" }
 *   - myRule: { any: options }             # registered with pipeline.register('myRule', factory)
 * ```
 *
 * Each entry is a mapping with one key, the rule's name; its value is the rule's options. When
 * the options are a mapping, `topics` (a pattern or a list: `.` separates segments, `*` is one
 * segment, a final `>` the rest) limits the rule to messages on those topics and is not passed
 * on to the rule. Rules run in the order listed; the first rejection wins; a sanitizer rewrites
 * `data` for the rules after it and for the message sent. `topics` is reserved: a custom rule
 * cannot take an option of that name.
 *
 * Field paths (`fields` of deny and redact) start at the root of `data`: `prompt` is the
 * top-level key only, `a.b` a nested key, `*` any one key, `**` any number of keys (also none),
 * so `**.token` is a `token` key at any depth. Array elements add no segment: `messages.text`
 * also reaches `messages[3].text`. Keys that contain a `.` cannot be addressed.
 */

/** How a rejected message fails: ValidationError or PayloadTooLargeError. */
export type RejectionCode = 'validation' | 'payload-too-large';

/** What a rule's check returns: nothing to pass, a reason (a validation failure) or a reason and code. */
export type RuleOutcome = undefined | string | { readonly reason: string; readonly code?: RejectionCode };

/**
 * One step of the pipeline, as a factory builds it from its options: a rule (`check`), a
 * sanitizer (`sanitize`) or both (check runs first). A check or sanitizer that throws makes the
 * message fail with that error (publish rejects with it; on consume it counts as the handler's
 * failure, retried if retryable): the handler never sees a message that was not verified.
 */
export interface VerificationRule {
  check?(envelope: Envelope): RuleOutcome | Promise<RuleOutcome>;
  /**
   * Returns the data to carry on with: the same value when nothing changes, otherwise a new one
   * (never modify `data` in place: it is the publisher's object). Runs on publish only — a
   * delivered envelope cannot be rewritten for the handler.
   */
  sanitize?(data: unknown, envelope: Envelope): unknown;
}

/**
 * Builds a rule from its options as found in the config (without `topics`). `path` names the
 * options in the config (`rules[2].myRule`): throw a ConfigError with a path under it for bad
 * options; any other error thrown is reported as a ConfigError at `path`.
 */
export type VerificationRuleFactory = (options: unknown, path: string) => VerificationRule;

/** Why the pipeline refused a message. */
export interface Rejection {
  /** The rule's name in the config, e.g. `deny`. */
  readonly rule: string;
  /** Its place in the config's `rules` list. */
  readonly index: number;
  readonly reason: string;
  readonly code: RejectionCode;
}

export type VerificationResult =
  | { readonly ok: true; readonly envelope: Envelope }
  | { readonly ok: false; readonly rejection: Rejection };

/** The config as an object: what the YAML text parses to. */
export interface VerificationConfig {
  readonly rules: readonly Readonly<Record<string, unknown>>[];
}

export interface VerificationPipelineOptions {
  /** Custom rules and sanitizers by name, registered before `config` is loaded. */
  readonly rules?: Readonly<Record<string, VerificationRuleFactory>>;
  /** YAML text or a config object; without one the pipeline passes every message. */
  readonly config?: string | VerificationConfig;
}

interface ActiveRule {
  readonly name: string;
  readonly index: number;
  readonly topics: readonly string[] | undefined;
  readonly rule: VerificationRule;
}

const RULE_NAME = /^[A-Za-z][A-Za-z0-9_-]*$/;

/**
 * Ordered, pluggable rules and sanitizers. `reload` swaps the whole rule list at once: a message
 * being verified finishes with the rules it started with, and a config that fails validation
 * throws a ConfigError and leaves the running rules in place.
 */
export class VerificationPipeline {
  readonly #factories = new Map<string, VerificationRuleFactory>(Object.entries(BUILT_IN_RULES));
  #active: readonly ActiveRule[] = [];
  #version = 0;

  constructor(options: VerificationPipelineOptions = {}) {
    for (const [name, factory] of Object.entries(options.rules ?? {})) this.register(name, factory);
    if (options.config !== undefined) this.reload(options.config);
  }

  /** Adds a rule or sanitizer under `name` for configs loaded from now on. Names are unique. */
  register(name: string, factory: VerificationRuleFactory): this {
    const path = `rules.${name}`;
    if (typeof name !== 'string' || !RULE_NAME.test(name)) {
      throw new ConfigError('a rule name is a letter then letters, digits, _ or -', { path });
    }
    if (this.#factories.has(name)) throw new ConfigError(`a rule named '${name}' is already registered`, { path });
    if (typeof factory !== 'function') throw new ConfigError('the factory must be a function', { path });
    this.#factories.set(name, factory);
    return this;
  }

  /** Validates `config` (YAML text or an object) and, if it is valid, replaces the running rules. */
  reload(config: string | VerificationConfig): void {
    const value = typeof config === 'string' ? parseYaml(config) : config;
    this.#active = this.#compile(value);
    this.#version++;
  }

  /** How many configs were loaded (0: none, every message passes). */
  get version(): number {
    return this.#version;
  }

  /** The names of the running rules, in order. */
  get rules(): readonly string[] {
    return this.#active.map((r) => r.name);
  }

  /**
   * Runs the rules that apply to the envelope's topic, in order. Resolves with the envelope to
   * carry on with (a new one when a sanitizer changed `data`; sanitizers run unless
   * `sanitize: false`) or with the first rejection.
   */
  async verify(envelope: Envelope, options: { readonly sanitize?: boolean } = {}): Promise<VerificationResult> {
    const rules = this.#active;
    const sanitize = options.sanitize ?? true;
    let env = envelope;
    for (const active of rules) {
      if (active.topics !== undefined && !active.topics.some((p) => topicMatches(p, env.topic))) continue;
      const { rule } = active;
      if (rule.check !== undefined) {
        const outcome = await rule.check(env);
        if (outcome !== undefined) {
          const reason = typeof outcome === 'string' ? outcome : outcome.reason;
          const code = typeof outcome === 'string' ? 'validation' : (outcome.code ?? 'validation');
          return { ok: false, rejection: { rule: active.name, index: active.index, reason, code } };
        }
      }
      if (sanitize && rule.sanitize !== undefined) {
        const data = rule.sanitize(env.data, env);
        if (data !== env.data) env = withAttributes(env, { data });
      }
    }
    return { ok: true, envelope: env };
  }

  #compile(config: unknown): ActiveRule[] {
    if (typeof config !== 'object' || config === null || Array.isArray(config)) {
      throw new ConfigError('the config must be a mapping with a rules list');
    }
    for (const key of Object.keys(config)) {
      if (key !== 'rules') throw new ConfigError('unknown key; the config has only rules', { path: key });
    }
    const top = config as { rules?: unknown };
    if (!Array.isArray(top.rules)) {
      throw new ConfigError(`must be a list of rules, got ${top.rules === undefined ? 'nothing' : typeof top.rules}`, {
        path: 'rules',
      });
    }
    return top.rules.map((entry: unknown, index) => this.#compileEntry(entry, index));
  }

  #compileEntry(entry: unknown, index: number): ActiveRule {
    const at = `rules[${index}]`;
    const keys = typeof entry === 'object' && entry !== null && !Array.isArray(entry) ? Object.keys(entry) : [];
    if (keys.length !== 1) {
      throw new ConfigError('must be a mapping with one key, the rule name (e.g. "- maxDepth: 16")', { path: at });
    }
    const name = keys[0] as string;
    const path = `${at}.${name}`;
    const factory = this.#factories.get(name);
    if (factory === undefined) {
      throw new ConfigError(`unknown rule '${name}'; known: ${[...this.#factories.keys()].join(', ')}`, { path });
    }
    let options = (entry as Record<string, unknown>)[name];
    let topics: string[] | undefined;
    if (typeof options === 'object' && options !== null && !Array.isArray(options) && 'topics' in options) {
      const { topics: given, ...rest } = options as Record<string, unknown>;
      topics = stringList(given, `${path}.topics`);
      topics.forEach((pattern, i) => {
        try {
          assertPattern(pattern);
        } catch (err) {
          throw new ConfigError(err instanceof Error ? err.message : String(err), {
            path: `${path}.topics[${i}]`,
            cause: err,
          });
        }
      });
      options = rest;
    }
    let rule: VerificationRule;
    try {
      rule = factory(options, path);
    } catch (err) {
      if (err instanceof ConfigError) throw err;
      throw new ConfigError(`invalid options: ${err instanceof Error ? err.message : String(err)}`, {
        path,
        cause: err,
      });
    }
    if (typeof rule?.check !== 'function' && typeof rule?.sanitize !== 'function') {
      throw new ConfigError(`rule '${name}' built neither a check nor a sanitize function`, { path });
    }
    return { name, index, topics, rule };
  }
}

/** A pipeline; see {@link VerificationPipeline}. */
export function verificationPipeline(options?: VerificationPipelineOptions): VerificationPipeline {
  return new VerificationPipeline(options);
}

/**
 * YAML text as a value, or a ConfigError with the line and column of the first problem. Warnings
 * (an unknown tag, say) count as errors: a security config is read strictly.
 */
function parseYaml(text: string): unknown {
  if (typeof text !== 'string') throw new ConfigError('the config must be YAML text or an object');
  const doc = parseDocument(text);
  const problem = doc.errors[0] ?? doc.warnings[0];
  if (problem !== undefined) {
    const pos = problem.linePos?.[0];
    throw new ConfigError(`invalid YAML: ${problem.message}`, {
      cause: problem,
      ...(pos === undefined ? {} : { data: { line: pos.line, column: pos.col } }),
    });
  }
  try {
    return doc.toJS();
  } catch (err) {
    // An alias expanded past yaml's maxAliasCount, say.
    throw new ConfigError(`invalid YAML: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}

/**
 * The error a rejection fails with: PayloadTooLargeError for `payload-too-large`, otherwise
 * ValidationError; `data` is `{ rule, reason }` and the message names both.
 */
export function rejectionError(rejection: Rejection): ValidationError | PayloadTooLargeError {
  const message = `verification rule '${rejection.rule}' (rules[${rejection.index}]) rejected the message: ${rejection.reason}`;
  const data = { rule: rejection.rule, reason: rejection.reason };
  return rejection.code === 'payload-too-large'
    ? new PayloadTooLargeError(message, { data })
    : new ValidationError(message, { data });
}

export interface VerificationMiddlewareOptions {
  /** Verify (and sanitize) outbound messages. Default true. */
  readonly onPublish?: boolean;
  /** Verify inbound messages before the handler runs. Default true. */
  readonly onConsume?: boolean;
  /** Where rejections are reported (warn), besides the error or the dead letter. Default: silent. */
  readonly logger?: Logger;
}

export const VERIFICATION_DEFAULTS = Object.freeze({ onPublish: true, onConsume: true });

/**
 * The pipeline as middleware. On publish a rejected message is not sent and the publish rejects
 * with a ValidationError (PayloadTooLargeError for a size rule) whose `data` is `{ rule, reason }`;
 * sanitizers replace the envelope that is sent. On consume a rejected message never reaches the
 * handler: the non-retryable error dead-letters it with reason `validation` or
 * `payload-too-large` and the rule and reason in the record's error. Consume verification also
 * covers messages from publishers without this middleware; it runs no sanitizers, and refuses
 * (`data.rule` `topic`) an envelope whose topic neither the subscription's pattern nor another
 * pattern its group was subscribed with here matches, as its topic would pick the rules.
 */
export function verification(pipeline: VerificationPipeline, options: VerificationMiddlewareOptions = {}): Middleware {
  if (!(pipeline instanceof VerificationPipeline)) {
    throw new ConfigError('must be a VerificationPipeline', { path: 'verification.pipeline' });
  }
  const flag = (key: 'onPublish' | 'onConsume'): boolean => {
    const value = options[key] ?? VERIFICATION_DEFAULTS[key];
    if (typeof value !== 'boolean') {
      throw new ConfigError(`must be a boolean, got ${String(value)}`, { path: `verification.${key}` });
    }
    return value;
  };
  const onPublish = flag('onPublish');
  const onConsume = flag('onConsume');
  const logger = options.logger ?? silentLogger;
  const refuse = (rejection: Rejection, env: Envelope, side: 'publish' | 'consume'): never => {
    logger.warn(
      { rule: rejection.rule, reason: rejection.reason, side, messageId: env.id, topic: env.topic },
      'verification rejected a message',
    );
    throw rejectionError(rejection);
  };
  const middleware: { name: string } & Pick<Middleware, 'publish' | 'consume' | 'subscribe'> = {
    name: 'verification',
  };
  if (onPublish) {
    middleware.publish = async (ctx, next) => {
      const result = await pipeline.verify(ctx.envelope);
      if (!result.ok) refuse(result.rejection, ctx.envelope, 'publish');
      else ctx.envelope = result.envelope;
      await next();
    };
  }
  if (onConsume) {
    const groups = new GroupPatterns();
    middleware.subscribe = groups.subscribed;
    middleware.consume = async (ctx, next) => {
      const env = ctx.envelope;
      if (!groups.delivers(ctx.group, ctx.pattern, env.topic)) {
        // Rules are scoped by the envelope's topic: one that is not where the message arrived
        // (set so by a raw publisher) would pick the rules of some other topic.
        const reason = `the envelope's topic ${env.topic} is not one the subscription ${ctx.pattern} matches`;
        logger.warn(
          { rule: 'topic', reason, side: 'consume', messageId: env.id, topic: env.topic },
          'verification rejected a message',
        );
        throw new ValidationError(`verification rejected the message: ${reason}`, { data: { rule: 'topic', reason } });
      }
      const result = await pipeline.verify(env, { sanitize: false });
      if (!result.ok) refuse(result.rejection, ctx.envelope, 'consume');
      await next();
    };
  }
  return middleware;
}
