import { ValidationError } from './errors.js';

export interface TextPart {
  readonly kind: 'text';
  readonly text: string;
  readonly metadata?: Readonly<Record<string, unknown>>;
}
export interface DataPart {
  readonly kind: 'data';
  /** Any JSON value. */
  readonly data: unknown;
  readonly metadata?: Readonly<Record<string, unknown>>;
}
export interface FilePart {
  readonly kind: 'file';
  /** By reference (`uri`) or inline (`bytes`, base64). */
  readonly file: { readonly name?: string; readonly mimeType?: string; readonly uri?: string; readonly bytes?: string };
  readonly metadata?: Readonly<Record<string, unknown>>;
}
/** A piece of content, as A2A parts. */
export type Part = TextPart | DataPart | FilePart;

/** A message of the task's conversation: the caller's (`user`) or the executor's (`agent`). */
export interface TaskMessage {
  readonly role: 'user' | 'agent';
  readonly parts: readonly Part[];
  /** Unique; a start or answer repeated with the same message id is taken once. */
  readonly messageId: string;
  readonly metadata?: Readonly<Record<string, unknown>>;
}

/** What a message may be given as: text, one part, parts, or a message (role and id filled in when absent). */
export type TaskInput =
  | string
  | Part
  | readonly Part[]
  | { readonly parts: readonly Part[]; readonly messageId?: string; readonly metadata?: Record<string, unknown> };

/** An output of the task. Artifacts sent with the same id replace it, or grow it with `append`. */
export interface Artifact {
  readonly artifactId: string;
  readonly name?: string;
  readonly description?: string;
  readonly parts: readonly Part[];
  readonly metadata?: Readonly<Record<string, unknown>>;
}

function assertPart(p: unknown): asserts p is Part {
  const part = p as Partial<Record<string, unknown>> | null;
  if (typeof part !== 'object' || part === null) throw new ValidationError('a part must be an object');
  if (part.kind === 'text' && typeof part.text === 'string') return;
  if (part.kind === 'data' && 'data' in part) return;
  if (part.kind === 'file' && typeof part.file === 'object' && part.file !== null) {
    const f = part.file as Record<string, unknown>;
    if (typeof f.uri === 'string' || typeof f.bytes === 'string') return;
    throw new ValidationError('a file part needs file.uri or file.bytes');
  }
  throw new ValidationError(`invalid part ${JSON.stringify(p)?.slice(0, 80)}: kind text, data or file expected`);
}

function partsOf(parts: unknown): Part[] {
  if (!Array.isArray(parts) || parts.length === 0) throw new ValidationError('parts must be a non-empty array');
  for (const p of parts) assertPart(p);
  return [...parts];
}

/** A message from what a caller or handler gave (see {@link TaskInput}). */
export function toTaskMessage(input: TaskInput, role: TaskMessage['role'], newId: () => string): TaskMessage {
  if (typeof input === 'string') return { role, parts: [{ kind: 'text', text: input }], messageId: newId() };
  if (Array.isArray(input)) return { role, parts: partsOf(input), messageId: newId() };
  if (typeof input === 'object' && input !== null && 'parts' in input) {
    const m = input as { parts: unknown; messageId?: unknown; metadata?: Record<string, unknown> };
    if (m.messageId !== undefined && (typeof m.messageId !== 'string' || m.messageId === '')) {
      throw new ValidationError('messageId must be a non-empty string');
    }
    return {
      role,
      parts: partsOf(m.parts),
      messageId: (m.messageId as string | undefined) ?? newId(),
      ...(m.metadata === undefined ? {} : { metadata: m.metadata }),
    };
  }
  return { role, parts: partsOf([input]), messageId: newId() };
}

/** Checks a message that arrived on the bus. */
export function assertTaskMessage(m: unknown, role: TaskMessage['role']): asserts m is TaskMessage {
  const msg = m as Partial<TaskMessage> | null;
  if (typeof msg !== 'object' || msg === null || msg.role !== role || typeof msg.messageId !== 'string') {
    throw new ValidationError(`a ${role} message with a messageId expected`);
  }
  partsOf(msg.parts);
}

/** Checks an artifact a handler gives. */
export function assertArtifact(a: unknown): asserts a is Artifact {
  const artifact = a as Partial<Artifact> | null;
  if (typeof artifact !== 'object' || artifact === null) throw new ValidationError('an artifact must be an object');
  if (typeof artifact.artifactId !== 'string' || artifact.artifactId === '') {
    throw new ValidationError('an artifact needs a non-empty artifactId');
  }
  partsOf(artifact.parts);
}

/** The text parts of a message joined by newlines ('' without a message). */
export function messageText(message: Pick<TaskMessage, 'parts'> | undefined): string {
  return (message?.parts ?? [])
    .filter((p): p is TextPart => p.kind === 'text')
    .map((p) => p.text)
    .join('\n');
}
