import { until } from '@agentbus/conformance';
import {
  ASYNCAPI_SCHEMA_FORMAT,
  type Bus,
  type CompatibilityRule,
  ConfigError,
  compatibilityIssues,
  createBus,
  createSchemaRegistry,
  type Delivery,
  type Envelope,
  type JsonSchema,
  type Logger,
  type MemoryTransport,
  memoryTransport,
  type SchemaRegistry,
  type SchemaViolation,
  schemaValidation,
  toAsyncApi,
  ValidationError,
} from '@agentbus/core';
import { afterEach, describe, expect, it } from 'vitest';

interface Logged {
  readonly obj: Record<string, unknown>;
  readonly msg: string | undefined;
}

function recordingLogger(): Logger & { warnings: Logged[]; errors: Logged[] } {
  const warnings: Logged[] = [];
  const errors: Logged[] = [];
  return {
    warnings,
    errors,
    debug() {},
    info() {},
    warn: (obj, msg) => warnings.push({ obj: obj as Record<string, unknown>, msg }),
    error: (obj, msg) => errors.push({ obj: obj as Record<string, unknown>, msg }),
  };
}

const TASK_V1 = {
  type: 'object',
  properties: { task: { type: 'string' }, assignee: { type: 'string' } },
  required: ['task', 'assignee'],
  additionalProperties: false,
} as const;
const TASK_V2 = {
  type: 'object',
  properties: {
    task: { type: 'string' },
    owner: { type: 'object', properties: { id: { type: 'string' } }, required: ['id'] },
  },
  required: ['task', 'owner'],
  additionalProperties: false,
} as const;
const TASK_V3 = {
  type: 'object',
  properties: {
    task: { type: 'object', properties: { title: { type: 'string', minLength: 1 } }, required: ['title'] },
    owner: { type: 'object', properties: { id: { type: 'string' } }, required: ['id'] },
    priority: { type: 'integer', minimum: 0, maximum: 9, default: 4 },
  },
  required: ['task', 'owner', 'priority'],
  additionalProperties: false,
} as const;

/** `task.assigned` in three versions: v1 → v2 renames `assignee` to `owner.id`, v2 → v3 makes `task` an object. */
function taskRegistry(logger: Logger = recordingLogger()): SchemaRegistry {
  const registry = createSchemaRegistry({ logger });
  registry.register({ type: 'task.assigned', version: 1, schema: TASK_V1, deprecated: 'publish version 3' });
  registry.register({
    type: 'task.assigned',
    version: 2,
    schema: TASK_V2,
    upcastFrom: (d) => {
      const { task, assignee } = d as { task: string; assignee: string };
      return { task, owner: { id: assignee } };
    },
  });
  registry.upcaster('task.assigned', 2, 3, (d) => {
    const v2 = d as { task: string; owner: { id: string } };
    return { ...v2, task: { title: v2.task } };
  });
  registry.register({ type: 'task.assigned', version: 3, schema: TASK_V3 });
  return registry;
}

const V3_TASK = { task: { title: 'write the report' }, owner: { id: 'writer' }, priority: 7 };

const buses: Bus[] = [];
afterEach(async () => {
  await Promise.all(buses.splice(0).map((b) => b.close()));
});

/** A consumer bus with the middleware and a publisher bus without it, on one memory transport. */
function pair(registry: SchemaRegistry, options: { requireSchema?: boolean } = {}) {
  const transport = memoryTransport();
  const quiet = recordingLogger();
  const consumer = createBus({
    transport,
    logger: quiet,
    middleware: [schemaValidation({ registry, onPublish: false, ...options })],
  });
  const rogue = createBus({ transport, logger: quiet, ownsTransport: false, source: 'rogue' });
  buses.push(rogue, consumer);
  return { transport, consumer, rogue };
}

/** Collects what the handler of `topic` saw. */
async function collect(bus: Bus, pattern: string): Promise<Envelope[]> {
  const seen: Envelope[] = [];
  await bus.subscribe(pattern, (d: Delivery) => {
    expect(d.data).toBe(d.envelope.data);
    seen.push(d.envelope);
  });
  return seen;
}

async function rejection(p: Promise<unknown>): Promise<ValidationError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ValidationError);
  return err as ValidationError;
}

async function deadLetters(transport: MemoryTransport, n: number) {
  await until(async () => (await transport.deadLetters.list()).length >= n, 5_000, `${n} dead letters`);
  return transport.deadLetters.list();
}

describe('schema registry', () => {
  it('keeps versions per type in numeric order, with frozen copies of the schemas', () => {
    const registry = createSchemaRegistry({ logger: recordingLogger() });
    const schema = { type: 'object', properties: { n: { type: 'number' } } };
    registry.register({ type: 'metric', version: 2, schema });
    registry.register({ type: 'metric', version: '10', schema });
    registry.register({ type: 'metric', version: '1.5', schema });
    expect(registry.versions('metric')).toEqual(['1.5', '2', '10']);
    expect(registry.latest('metric')?.version).toBe('10');
    expect(registry.get('metric', 2)?.version).toBe('2');
    expect(registry.get('metric', '3')).toBeUndefined();
    expect(registry.latest('nothing')).toBeUndefined();
    expect(registry.versions('nothing')).toEqual([]);
    expect(registry.types()).toEqual(['metric']);
    // The caller's object can change; the registered schema cannot.
    (schema.properties.n as { type: string }).type = 'string';
    const stored = registry.get('metric', 2)?.schema as { properties: { n: { type: string } } };
    expect(stored.properties.n.type).toBe('number');
    expect(Object.isFrozen(stored.properties.n)).toBe(true);
    expect(registry.validate('metric', '2', { n: 1 })).toBeUndefined();
    expect(registry.validate('metric', '2', { n: 'one' })?.problem).toBe('invalid');
  });

  it('refuses bad registrations with ConfigError naming the field', () => {
    const registry = createSchemaRegistry({ logger: recordingLogger() });
    const path = (f: () => unknown) => {
      try {
        f();
      } catch (err) {
        expect(err).toBeInstanceOf(ConfigError);
        return (err as ConfigError).path;
      }
      throw new Error('expected a ConfigError');
    };
    expect(path(() => registry.register({ type: '', version: 1, schema: {} }))).toBe('type');
    expect(path(() => registry.register({ type: 't', version: 'v1', schema: {} }))).toBe('version');
    expect(path(() => registry.register({ type: 't', version: 1.5, schema: {} }))).toBe('version');
    expect(path(() => registry.register({ type: 't', version: 1, schema: [] as unknown as JsonSchema }))).toBe(
      'schema',
    );
    // ajv strict mode: a typo in a keyword is a mistake, not an extension.
    expect(path(() => registry.register({ type: 't', version: 1, schema: { type: 'object', requried: ['a'] } }))).toBe(
      'schema',
    );
    expect(path(() => registry.register({ type: 't', version: 1, schema: true, upcastFrom: (d) => d }))).toBe(
      'upcastFrom',
    );
    expect(path(() => registry.upcaster('t', 2, 1, (d) => d))).toBe('toVersion');
    registry.register({ type: 't', version: 1, schema: { type: 'string' } });
    expect(path(() => registry.register({ type: 't', version: '1.0', schema: { type: 'string' } }))).toBe('version');
    // The same schema again is fine; another one under the same version needs force.
    expect(registry.register({ type: 't', version: 1, schema: { type: 'string' }, description: 'a' }).description).toBe(
      'a',
    );
    expect(path(() => registry.register({ type: 't', version: 1, schema: { type: 'number' } }))).toBe('schema');
    registry.register({ type: 't', version: 1, schema: { type: 'number' }, force: true });
    expect(registry.validate('t', '1', 3)).toBeUndefined();
    expect(registry.validate('t', '1', 'three')?.problem).toBe('invalid');
  });

  it('reports every error with allErrors, and applies every ajv strict check with strict', () => {
    const schema = { type: 'object', properties: { a: { type: 'string' }, b: { type: 'string' } } };
    const first = createSchemaRegistry({ logger: recordingLogger() });
    const all = createSchemaRegistry({ logger: recordingLogger(), allErrors: true });
    first.register({ type: 't', version: 1, schema });
    all.register({ type: 't', version: 1, schema });
    expect(first.validate('t', '1', { a: 1, b: 2 })?.errors).toHaveLength(1);
    expect(all.validate('t', '1', { a: 1, b: 2 })?.errors.map((e) => e.instancePath)).toEqual(['/a', '/b']);
    expect(() => first.assertValid('t', '1', { a: 1 })).toThrow(ValidationError);

    const loose = { allOf: [{ required: ['a'] }] };
    // By default ajv's type strictness only warns, through the registry's logger.
    const logger = recordingLogger();
    createSchemaRegistry({ logger }).register({ type: 't', version: 1, schema: loose });
    expect(logger.warnings.map((w) => w.msg)).toContainEqual(expect.stringMatching(/strictTypes/));
    const strict = createSchemaRegistry({ logger: recordingLogger(), strict: true });
    expect(() => strict.register({ type: 't', version: 1, schema: loose })).toThrow(/strict mode/);
    const lax = createSchemaRegistry({ logger: recordingLogger(), strict: false });
    lax.register({ type: 't', version: 1, schema: { type: 'object', 'x-owner': 'team-a' } });
  });

  it('takes upcasters inline from any earlier version, once each', () => {
    const registry = createSchemaRegistry({ logger: recordingLogger() });
    const num = { type: 'object', properties: { n: { type: 'number' } }, required: ['n'] };
    const str = { type: 'object', properties: { s: { type: 'string' } }, required: ['s'] };
    const both = { type: 'object', properties: { s: { type: 'string' }, n: { type: 'number' } }, required: ['s', 'n'] };
    registry.register({ type: 'v', version: 1, schema: num });
    const spelledOut = (d: unknown) => ({ s: String((d as { n: number }).n) });
    registry.register({ type: 'v', version: 2, schema: str, upcastFrom: spelledOut });
    // From version 1 straight to 3, bridging nothing (2 → 3 is checked and breaks): refused.
    const skip = (d: unknown) => ({ s: 'direct', n: (d as { n: number }).n });
    expect(() =>
      registry.register({ type: 'v', version: 3, schema: both, upcastFrom: { version: 1, upcast: skip } }),
    ).toThrow(/required/);
    registry.upcaster('v', 2, 3, (d) => ({ ...(d as object), n: 0 }));
    registry.register({ type: 'v', version: 3, schema: both, upcastFrom: { version: 1, upcast: skip } });
    // The furthest-reaching upcaster wins: version 1 goes straight to 3.
    const env = { type: 'v', schemaversion: '1', data: { n: 7 } } as unknown as Envelope;
    expect(registry.upcast(env).data).toEqual({ s: 'direct', n: 7 });
    expect(registry.upcast({ ...env, schemaversion: '2', data: { s: 'x' } }).data).toEqual({ s: 'x', n: 0 });
    // The same upcaster again is a no-op, another one for the same step a ConfigError.
    registry.upcaster('v', 1, 2, spelledOut);
    expect(() => registry.upcaster('v', 1, 2, (d) => d)).toThrow(ConfigError);
    expect(() =>
      registry.register({ type: 'v', version: 4, schema: both, upcastFrom: { version: 4, upcast: skip } }),
    ).toThrow(ConfigError);
  });

  it('lets a forced replacement reuse the $id of the schema it replaces', () => {
    const registry = createSchemaRegistry({ logger: recordingLogger() });
    registry.register({ type: 'id', version: 1, schema: { $id: 'urn:agentbus:id', type: 'string' } });
    expect(() =>
      registry.register({ type: 'id', version: 2, schema: { $id: 'urn:agentbus:id', type: 'string' } }),
    ).toThrow(/cannot compile/);
    registry.register({ type: 'id', version: 1, schema: { $id: 'urn:agentbus:id', type: 'number' }, force: true });
    expect(registry.validate('id', '1', 5)).toBeUndefined();
    expect(registry.validate('id', '1', 'five')?.problem).toBe('invalid');
  });

  it('reports unknown types and versions as violations', () => {
    const registry = taskRegistry();
    expect(registry.validate('task.created', '1', {})).toEqual({
      problem: 'unknown-type',
      type: 'task.created',
      errors: [],
    });
    expect(registry.validate('task.assigned', '7', {})).toMatchObject({
      problem: 'unknown-version',
      schemaversion: '7',
    });
    expect(registry.validate('task.assigned', undefined, V3_TASK)).toBeUndefined();
  });
});

describe('schema validation on publish', () => {
  it('sends a valid payload, stamped with the latest version when it has none', async () => {
    const registry = taskRegistry();
    const bus = createBus({ transport: memoryTransport(), middleware: [schemaValidation({ registry })] });
    buses.push(bus);
    const seen = await collect(bus, 'tasks.>');
    const sent = await bus.publish('tasks.assigned', V3_TASK, { type: 'task.assigned' });
    expect(sent.schemaversion).toBe('3');
    await until(() => seen.length === 1);
    expect(seen[0]?.data).toEqual(V3_TASK);
    expect(seen[0]?.schemaversion).toBe('3');
  });

  it('rejects an invalid payload with ValidationError and compact ajv errors, and sends nothing', async () => {
    const registry = taskRegistry();
    const bus = createBus({ transport: memoryTransport(), middleware: [schemaValidation({ registry })] });
    buses.push(bus);
    const seen = await collect(bus, 'tasks.>');
    const err = await rejection(
      bus.publish('tasks.assigned', { task: { title: '' }, owner: {}, priority: 4 }, { type: 'task.assigned' }),
    );
    expect(err.code).toBe('VALIDATION');
    expect(err.retryable).toBe(false);
    const data = err.data as SchemaViolation;
    expect(data.problem).toBe('invalid');
    expect(data.type).toBe('task.assigned');
    expect(data.schemaversion).toBe('3');
    expect(data.errors.length).toBeGreaterThan(0);
    for (const e of data.errors) expect(Object.keys(e).sort()).toEqual(['instancePath', 'keyword', 'message']);
    expect(data.errors[0]?.keyword).toMatch(/minLength|required/);
    // The error survives the wire as the same data.
    expect(JSON.parse(JSON.stringify(err.toWire())).data).toEqual(data);

    // An unregistered version, and a batch with one bad item, are refused whole.
    const unknown = await rejection(
      bus.publish('tasks.assigned', V3_TASK, { type: 'task.assigned', schemaversion: '9' }),
    );
    expect((unknown.data as SchemaViolation).problem).toBe('unknown-version');
    await rejection(
      bus.publishBatch([
        { topic: 'tasks.assigned', data: V3_TASK, options: { type: 'task.assigned' } },
        { topic: 'tasks.assigned', data: { task: 'x' }, options: { type: 'task.assigned' } },
      ]),
    );
    // A marker published after everything arrives alone: nothing refused was sent before it.
    await bus.publish('tasks.assigned', { ...V3_TASK, priority: 1 }, { type: 'task.assigned' });
    await until(() => seen.length === 1);
    expect(seen.map((e) => (e.data as { priority: number }).priority)).toEqual([1]);
  });

  it('lets a message of an unknown type pass, unless requireSchema', async () => {
    const registry = taskRegistry();
    const open = createBus({ transport: memoryTransport(), middleware: [schemaValidation({ registry })] });
    const strict = createBus({
      transport: memoryTransport(),
      middleware: [schemaValidation({ registry, requireSchema: true })],
    });
    buses.push(open, strict);
    await open.publish('chat.said', { anything: true });
    const err = await rejection(strict.publish('chat.said', { anything: true }));
    expect(err.data).toEqual({ problem: 'unknown-type', type: 'chat.said', errors: [] });
    await strict.publish('tasks.assigned', V3_TASK, { type: 'task.assigned' });
  });

  it('validates only the sides it is asked to', async () => {
    const registry = taskRegistry();
    const consumeOnly = schemaValidation({ registry, onPublish: false });
    const publishOnly = schemaValidation({ registry, onConsume: false });
    expect(consumeOnly.publish).toBeUndefined();
    expect(consumeOnly.consume).toBeTypeOf('function');
    expect(publishOnly.consume).toBeUndefined();
    expect(() => schemaValidation({ registry: {} as SchemaRegistry })).toThrow(ConfigError);
    expect(() => schemaValidation({ registry, onPublish: 'yes' as unknown as boolean })).toThrow(ConfigError);
  });
});

describe('schema validation on consume', () => {
  it('dead-letters an invalid payload published without the middleware (validation); the handler never sees it', async () => {
    const registry = taskRegistry();
    const { transport, consumer, rogue } = pair(registry);
    const seen = await collect(consumer, 'tasks.>');
    const opts = { type: 'task.assigned' };
    await rogue.publish('tasks.assigned', { ...V3_TASK, priority: 1 }, opts);
    const bad = await rogue.publish('tasks.assigned', { ...V3_TASK, priority: 'urgent' }, opts);
    await rogue.publish('tasks.assigned', { ...V3_TASK, priority: 3 }, opts);
    const [dead] = await deadLetters(transport, 1);
    expect(dead?.reason).toBe('validation');
    expect(dead?.message.id).toBe(bad.id);
    expect(dead?.attempts).toBe(1);
    expect(dead?.error).toMatch(/^VALIDATION: .*\/priority must be integer/);
    await until(() => seen.length === 2);
    expect(seen.map((e) => (e.data as { priority: number }).priority)).toEqual([1, 3]);
    expect(await transport.deadLetters.list()).toHaveLength(1);
  });

  it('dead-letters unknown versions, and unknown types only with requireSchema', async () => {
    const registry = taskRegistry();
    const { transport, consumer, rogue } = pair(registry, { requireSchema: true });
    const seen = await collect(consumer, 'tasks.>');
    await rogue.publish('tasks.assigned', V3_TASK, { type: 'task.assigned', schemaversion: '4' });
    await rogue.publish('tasks.other', { x: 1 });
    await rogue.publish('tasks.assigned', V3_TASK, { type: 'task.assigned' });
    const dead = await deadLetters(transport, 2);
    expect(dead.map((d) => d.reason)).toEqual(['validation', 'validation']);
    await until(() => seen.length === 1);
    expect(seen[0]?.schemaversion).toBeUndefined(); // already the latest: handed over as it came

    const open = pair(registry);
    const openSeen = await collect(open.consumer, 'tasks.>');
    await open.rogue.publish('tasks.other', { x: 1 });
    await until(() => openSeen.length === 1);
  });

  it('upcasts v1 and v2 payloads through v2 to v3 before the handler sees them', async () => {
    const registry = taskRegistry();
    const { consumer, rogue } = pair(registry);
    const seen = await collect(consumer, 'tasks.>');
    const v1 = await rogue.publish(
      'tasks.assigned',
      { task: 'write the report', assignee: 'writer' },
      { type: 'task.assigned', schemaversion: '1' },
    );
    await rogue.publish(
      'tasks.assigned',
      { task: 'review', owner: { id: 'critic' } },
      { type: 'task.assigned', schemaversion: '2' },
    );
    await until(() => seen.length === 2);
    expect(seen.map((e) => [e.schemaversion, e.data])).toEqual([
      ['3', { task: { title: 'write the report' }, owner: { id: 'writer' }, priority: 4 }],
      ['3', { task: { title: 'review' }, owner: { id: 'critic' }, priority: 4 }],
    ]);
    // A new envelope: same identity, the rest as published.
    const first = seen[0] as Envelope;
    expect(Object.isFrozen(first)).toBe(true);
    expect([first.id, first.source, first.topic, first.type]).toEqual([
      v1.id,
      'rogue',
      'tasks.assigned',
      'task.assigned',
    ]);
  });

  it('hands the upcast envelope to the consume hooks after it as well (those before see it as delivered)', async () => {
    const registry = taskRegistry();
    const transport = memoryTransport();
    const hooksSaw: (string | undefined)[] = [];
    const beforeSaw: (string | undefined)[] = [];
    const consumer = createBus({
      transport,
      logger: recordingLogger(),
      middleware: [
        {
          name: 'before',
          consume(ctx, next) {
            beforeSaw.push(ctx.envelope.schemaversion);
            return next();
          },
        },
        schemaValidation({ registry }),
        {
          name: 'after',
          consume(ctx, next) {
            expect(ctx.envelope).toBe(ctx.delivery.envelope);
            hooksSaw.push(ctx.envelope.schemaversion);
            return next();
          },
        },
      ],
    });
    buses.push(consumer);
    const seen = await collect(consumer, 'tasks.>');
    await consumer.publishBatch([
      {
        topic: 'tasks.assigned',
        data: { task: 'a', assignee: 'b' },
        options: { type: 'task.assigned', schemaversion: '1' },
      },
      { topic: 'tasks.assigned', data: V3_TASK, options: { type: 'task.assigned' } },
    ]);
    await until(() => seen.length === 2);
    expect(beforeSaw).toEqual(['1', '3']);
    expect(hooksSaw).toEqual(['3', '3']);
    expect(seen.map((e) => e.schemaversion)).toEqual(['3', '3']);
  });

  it('carries a payload over to a compatible later version, filling in its defaults', () => {
    const registry = createSchemaRegistry({ logger: recordingLogger() });
    registry.register({
      type: 'note',
      version: 1,
      schema: { type: 'object', properties: { text: { type: 'string' } } },
    });
    registry.register({
      type: 'note',
      version: 2,
      schema: {
        type: 'object',
        properties: { text: { type: 'string' }, lang: { type: 'string', default: 'en' } },
        required: ['lang'],
      },
    });
    const data = { text: 'hi' };
    const env = { type: 'note', schemaversion: '1', data } as unknown as Envelope;
    const up = registry.upcast(env);
    expect(up.data).toEqual({ text: 'hi', lang: 'en' });
    expect(up.schemaversion).toBe('2');
    expect(data).toEqual({ text: 'hi' }); // the delivered payload is left alone
    const latest = { type: 'note', schemaversion: '2', data: { lang: 'de' } } as unknown as Envelope;
    expect(registry.upcast(latest)).toBe(latest);
  });

  it('dead-letters a message whose upcaster throws or produces an invalid payload', async () => {
    const registry = createSchemaRegistry({ logger: recordingLogger() });
    registry.register({ type: 'job', version: 1, schema: { type: 'object', properties: { n: { type: 'number' } } } });
    registry.upcaster('job', 1, 2, (d) => {
      const { n } = d as { n: number };
      if (n < 0) throw new Error('negative');
      return { count: n > 100 ? 'many' : n };
    });
    registry.register({
      type: 'job',
      version: 2,
      schema: { type: 'object', properties: { count: { type: 'integer' } }, required: ['count'] },
    });
    const { transport, consumer, rogue } = pair(registry);
    const seen = await collect(consumer, 'jobs');
    const opts = { type: 'job', schemaversion: '1' };
    await rogue.publish('jobs', { n: -1 }, opts);
    await rogue.publish('jobs', { n: 1000 }, opts);
    await rogue.publish('jobs', { n: 5 }, opts);
    const dead = await deadLetters(transport, 2);
    expect(dead.map((d) => d.reason)).toEqual(['validation', 'validation']);
    expect(dead[0]?.error).toMatch(/upcasting job 1 to 2 failed: negative/);
    expect(dead[1]?.error).toMatch(/job version 2 after migrating from 1: \/count must be integer/);
    await until(() => seen.length === 1);
    expect(seen[0]?.data).toEqual({ count: 5 });
    const err = await rejection(
      Promise.resolve().then(() => registry.upcast({ ...(seen[0] as Envelope), data: { count: 'x' } })),
    );
    expect((err.data as SchemaViolation).problem).toBe('invalid');
  });
});

describe('compatibility check', () => {
  const base = {
    type: 'object',
    properties: {
      id: { type: 'string', minLength: 1, maxLength: 64, pattern: '^[a-z]+$' },
      count: { type: 'integer', minimum: 0, maximum: 100 },
      ratio: { type: 'number', exclusiveMinimum: 0, multipleOf: 0.5 },
      status: { enum: ['open', 'closed'] },
      kind: { const: 'task' },
      tags: { type: 'array', items: { type: 'string' }, maxItems: 10 },
      meta: { type: 'object', properties: { by: { type: 'string' } } },
      any: {},
    },
    required: ['id'],
    additionalProperties: false,
  };
  /** `base` with `patch` applied at a top-level property (undefined removes it). */
  const withProp = (name: string, schema: JsonSchema | undefined, extra: Record<string, unknown> = {}) => {
    const properties: Record<string, unknown> = { ...base.properties, [name]: schema };
    if (schema === undefined) delete properties[name];
    return { ...base, properties, ...extra };
  };

  const breaking: [string, JsonSchema, CompatibilityRule, string][] = [
    ['a newly required property without a default', { ...base, required: ['id', 'count'] }, 'required-added', '/'],
    ['a property removed while additionalProperties is false', withProp('any', undefined), 'property-removed', '/'],
    [
      'a type narrowed',
      withProp('ratio', { type: 'integer', exclusiveMinimum: 0, multipleOf: 0.5 }),
      'type-narrowed',
      '/ratio',
    ],
    ['a type changed', withProp('count', { type: 'string' }), 'type-narrowed', '/count'],
    ['an untyped property typed', withProp('any', { type: 'string' }), 'type-narrowed', '/any'],
    ['an enum value removed', withProp('status', { enum: ['open'] }), 'enum-narrowed', '/status'],
    ['an enum introduced', withProp('id', { type: 'string', enum: ['a'] }), 'enum-narrowed', '/id'],
    ['a const changed', withProp('kind', { const: 'job' }), 'const-changed', '/kind'],
    ['a minimum raised', withProp('count', { type: 'integer', minimum: 1, maximum: 100 }), 'bound-tightened', '/count'],
    ['a maximum lowered', withProp('count', { type: 'integer', minimum: 0, maximum: 99 }), 'bound-tightened', '/count'],
    [
      'an inclusive bound made exclusive',
      withProp('count', { type: 'integer', minimum: 0, exclusiveMaximum: 100 }),
      'bound-tightened',
      '/count',
    ],
    [
      'a multipleOf coarsened',
      withProp('ratio', { type: 'number', exclusiveMinimum: 0, multipleOf: 1 }),
      'bound-tightened',
      '/ratio',
    ],
    [
      'a minLength raised',
      withProp('id', { type: 'string', minLength: 2, maxLength: 64, pattern: '^[a-z]+$' }),
      'bound-tightened',
      '/id',
    ],
    [
      'a maxLength lowered',
      withProp('id', { type: 'string', minLength: 1, maxLength: 32, pattern: '^[a-z]+$' }),
      'bound-tightened',
      '/id',
    ],
    [
      'a pattern changed',
      withProp('id', { type: 'string', minLength: 1, maxLength: 64, pattern: '^[a-z0-9]+$' }),
      'pattern-changed',
      '/id',
    ],
    [
      'array items narrowed',
      withProp('tags', { type: 'array', items: { type: 'string', maxLength: 8 }, maxItems: 10 }),
      'bound-tightened',
      '/tags/*',
    ],
    [
      'maxItems lowered',
      withProp('tags', { type: 'array', items: { type: 'string' }, maxItems: 5 }),
      'bound-tightened',
      '/tags',
    ],
    [
      'a nested object closed',
      withProp('meta', { type: 'object', properties: { by: { type: 'string' } }, additionalProperties: false }),
      'additional-properties-narrowed',
      '/meta',
    ],
    [
      'a nested type narrowed',
      withProp('meta', { type: 'object', properties: { by: { type: 'integer' } } }),
      'type-narrowed',
      '/meta/by',
    ],
    ['a composition keyword changed', { ...base, allOf: [{ required: ['count'] }] }, 'keyword-changed', '/'],
    ['the false schema', withProp('any', false), 'schema-false', '/any'],
  ];

  it.each(breaking)('refuses %s unless forced', (_what, schema, rule, path) => {
    const registry = createSchemaRegistry({ logger: recordingLogger() });
    registry.register({ type: 'thing', version: 1, schema: base });
    let err: unknown;
    try {
      registry.register({ type: 'thing', version: 2, schema });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const data = (err as ConfigError).data as {
      type: string;
      version: string;
      issues: { rule: string; path: string }[];
    };
    expect(data).toMatchObject({ type: 'thing', version: '2' });
    expect(data.issues).toContainEqual(expect.objectContaining({ rule, path, against: '1' }));
    expect((err as Error).message).toContain(path);
    expect(registry.versions('thing')).toEqual(['1']);
    registry.register({ type: 'thing', version: 2, schema, force: true });
    expect(registry.versions('thing')).toEqual(['1', '2']);
  });

  const compatible: [string, JsonSchema][] = [
    ['the same schema with other annotations', { ...base, title: 'Thing', description: 'a thing' }],
    ['an optional property added', withProp('note', { type: 'string' })],
    [
      'a required property added with a default',
      withProp('note', { type: 'string', default: '' }, { required: ['id', 'note'] }),
    ],
    ['a property no longer required', { ...base, required: [] }],
    ['an enum value added', withProp('status', { enum: ['open', 'closed', 'archived'] })],
    ['an enum typed by its values', withProp('status', { type: 'string', enum: ['open', 'closed'] })],
    ['a type widened', withProp('count', { type: ['number', 'null'], minimum: 0, maximum: 100 })],
    ['bounds loosened and the pattern dropped', withProp('id', { type: 'string', maxLength: 128 })],
    ['a const kept inside an enum', withProp('kind', { enum: ['task', 'job'] })],
    ['the object opened', { ...base, additionalProperties: true }],
  ];

  it.each(compatible)('accepts %s', (_what, schema) => {
    const registry = createSchemaRegistry({ logger: recordingLogger() });
    registry.register({ type: 'thing', version: 1, schema: base });
    expect(compatibilityIssues(base, schema)).toEqual([]);
    registry.register({ type: 'thing', version: 2, schema });
    expect(registry.latest('thing')?.version).toBe('2');
  });

  it('accepts a breaking version bridged by an upcaster from the previous version', () => {
    const registry = taskRegistry();
    // v2 and v3 of taskRegistry() are each breaking; upcastFrom and upcaster() let them in.
    expect(registry.versions('task.assigned')).toEqual(['1', '2', '3']);
    expect(
      compatibilityIssues(TASK_V1, TASK_V2)
        .map((i) => i.rule)
        .sort(),
    ).toEqual(['property-removed', 'required-added']);
    expect(compatibilityIssues(TASK_V2, TASK_V3).map((i) => i.rule)).toContain('type-narrowed');
    // An upcaster from an older version does not bridge the previous one.
    registry.upcaster('task.assigned', 1, 4, (d) => d);
    const v4 = {
      ...TASK_V3,
      properties: { ...TASK_V3.properties, due: { type: 'string' } },
      required: [...TASK_V3.required, 'due'],
    };
    expect(() => registry.register({ type: 'task.assigned', version: 4, schema: v4 })).toThrow(/required/);
    registry.upcaster('task.assigned', 3, 4, (d) => ({ ...(d as object), due: 'never' }));
    registry.register({ type: 'task.assigned', version: 4, schema: v4 });
    expect(registry.latest('task.assigned')?.version).toBe('4');
  });

  it('checks a version registered between two others against both', () => {
    const registry = createSchemaRegistry({ logger: recordingLogger() });
    registry.register({ type: 'n', version: 1, schema: { type: 'integer' } });
    registry.register({ type: 'n', version: 3, schema: { type: 'number' } });
    // Wider than v3 would break v3's readers of it.
    expect(() => registry.register({ type: 'n', version: 2, schema: { type: ['number', 'string'] } })).toThrow(/vs 3/);
    registry.register({ type: 'n', version: 2, schema: { type: 'number', description: 'between' } });
    expect(registry.versions('n')).toEqual(['1', '2', '3']);
  });

  it('checks old values of a finite domain one by one', () => {
    expect(compatibilityIssues({ type: 'boolean' }, { enum: [true, false] })).toEqual([]);
    expect(compatibilityIssues({ type: 'boolean' }, { const: true })).toMatchObject([{ rule: 'const-changed' }]);
    expect(compatibilityIssues({ enum: [1, 2.5] }, { type: 'integer' })).toMatchObject([{ rule: 'type-narrowed' }]);
    expect(compatibilityIssues({ enum: ['a', 'bb'] }, { type: 'string', maxLength: 1 })).toMatchObject([
      { rule: 'bound-tightened' },
    ]);
    expect(compatibilityIssues(true, { type: 'string' })).toMatchObject([{ rule: 'type-narrowed', path: '/' }]);
    expect(compatibilityIssues(false, { type: 'string' })).toEqual([]);
  });
});

describe('deprecation', () => {
  it('warns once per type and version through the logger and counts every use', async () => {
    const logger = recordingLogger();
    const registry = taskRegistry(logger);
    const bus = createBus({ transport: memoryTransport(), logger, middleware: [schemaValidation({ registry })] });
    buses.push(bus);
    const seen = await collect(bus, 'tasks.>');
    const v1 = { task: 'x', assignee: 'y' };
    for (let i = 0; i < 3; i++) await bus.publish('tasks.assigned', v1, { type: 'task.assigned', schemaversion: '1' });
    await bus.publish('tasks.assigned', V3_TASK, { type: 'task.assigned' });
    await until(() => seen.length === 4);
    const warnings = logger.warnings.filter((w) => w.msg === 'deprecated schema version in use');
    expect(warnings).toEqual([
      {
        msg: 'deprecated schema version in use',
        obj: { type: 'task.assigned', schemaversion: '1', side: 'publish', note: 'publish version 3' },
      },
    ]);
    expect(registry.deprecatedUses()).toEqual([{ type: 'task.assigned', version: '1', published: 3, consumed: 3 }]);

    // Deprecating later takes effect from then on.
    registry.deprecate('task.assigned', 2);
    expect(registry.get('task.assigned', 2)?.deprecated).toBe(true);
    await bus.publish(
      'tasks.assigned',
      { task: 'x', owner: { id: 'y' } },
      { type: 'task.assigned', schemaversion: '2' },
    );
    await until(() => seen.length === 5);
    expect(logger.warnings.filter((w) => w.msg === 'deprecated schema version in use')).toHaveLength(2);
    expect(registry.deprecatedUses()).toContainEqual({
      type: 'task.assigned',
      version: '2',
      published: 1,
      consumed: 1,
    });
  });
});

describe('AsyncAPI export', () => {
  it('describes every type and version as an AsyncAPI 3.0 document', () => {
    const registry = taskRegistry();
    registry.register({
      type: 'note',
      version: 1,
      schema: { type: 'string' },
      topic: 'notes.new',
      description: 'A note.',
    });
    registry.register({ type: 'review.done', version: 1, schema: { type: 'object' } });
    const doc = toAsyncApi(registry, {
      info: { title: 'crew', version: '2.1.0' },
      topics: { 'task.assigned': 'tasks.assigned', 'review.done': 'tasks.assigned' },
    });
    // Plain JSON.
    expect(JSON.parse(JSON.stringify(doc))).toEqual(doc);
    expect(doc.asyncapi).toBe('3.0.0');
    expect(doc.info).toEqual({ title: 'crew', version: '2.1.0' });
    expect(Object.keys(doc).sort()).toEqual(
      ['asyncapi', 'channels', 'components', 'defaultContentType', 'info', 'operations'].sort(),
    );
    // One channel per topic; two types share one.
    expect(
      Object.values(doc.channels)
        .map((c) => c.address)
        .sort(),
    ).toEqual(['notes.new', 'tasks.assigned']);
    const tasks = Object.values(doc.channels).find((c) => c.address === 'tasks.assigned');
    expect(Object.keys(tasks?.messages ?? {}).sort()).toEqual([
      'review.done.v1',
      'task.assigned.v1',
      'task.assigned.v2',
      'task.assigned.v3',
    ]);
    // A send and a receive operation per channel, each listing the channel's messages.
    expect(
      Object.values(doc.operations)
        .map((o) => o.action)
        .sort(),
    ).toEqual(['receive', 'receive', 'send', 'send']);
    // Messages per type and version, their payload the registered schema.
    const v1 = doc.components.messages['task.assigned.v1'];
    expect(v1).toMatchObject({ name: 'task.assigned', 'x-schemaversion': '1', 'x-deprecated': true });
    expect(v1?.description).toBe('Deprecated: publish version 3');
    const payload = resolve(doc, v1?.payload.$ref ?? '') as { schemaFormat: string; schema: unknown };
    expect(payload).toEqual({ schemaFormat: ASYNCAPI_SCHEMA_FORMAT, schema: TASK_V1 });
    expect(doc.components.messages['note.v1']?.description).toBe('A note.');
    // Every reference resolves, and every key is in AsyncAPI's alphabet.
    const refs: string[] = [];
    walk(doc, (key, value) => {
      if (key === '$ref') refs.push(value as string);
    });
    expect(refs.length).toBeGreaterThan(10);
    for (const ref of refs) expect(resolve(doc, ref), ref).toBeDefined();
    for (const section of [doc.channels, doc.operations, doc.components.messages, doc.components.schemas]) {
      for (const key of Object.keys(section)) expect(key).toMatch(/^[A-Za-z0-9._-]+$/);
    }
  });

  it('defaults a type to the topic of its name and can describe one side only', () => {
    const registry = createSchemaRegistry({ logger: recordingLogger() });
    registry.register({ type: 'a:b', version: 1, schema: true });
    registry.register({ type: 'a_b', version: 1, schema: true });
    const doc = toAsyncApi(registry, { actions: ['receive'] });
    expect(doc.info).toEqual({ title: 'agentbus', version: '1.0.0' });
    expect(Object.entries(doc.channels).map(([id, c]) => [id, c.address])).toEqual([
      ['a_b', 'a:b'],
      ['a_b_2', 'a_b'],
    ]);
    expect(Object.keys(doc.operations)).toEqual(['receive.a_b', 'receive.a_b_2']);
  });
});

function resolve(doc: unknown, ref: string): unknown {
  expect(ref.startsWith('#/')).toBe(true);
  let node: unknown = doc;
  for (const token of ref.slice(2).split('/')) {
    node = (node as Record<string, unknown> | undefined)?.[token.replaceAll('~1', '/').replaceAll('~0', '~')];
  }
  return node;
}

function walk(value: unknown, visit: (key: string, value: unknown) => void): void {
  if (typeof value !== 'object' || value === null) return;
  for (const [k, v] of Object.entries(value)) {
    visit(k, v);
    walk(v, visit);
  }
}
