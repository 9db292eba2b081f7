import type { Logger } from '../logger.js';

/** How often a deprecated version was published and consumed. */
export interface DeprecatedUse {
  readonly type: string;
  readonly version: string;
  readonly published: number;
  readonly consumed: number;
}

/** Counts uses of deprecated schema versions and warns once per (type, version). */
export class SchemaDeprecations {
  readonly #uses = new Map<string, { type: string; version: string; published: number; consumed: number }>();

  constructor(private readonly logger: Logger) {}

  /** Counts one use; the first of a (type, version) is logged as a warning, with `note` if any. */
  record(type: string, version: string, side: 'publish' | 'consume', note: string | undefined): void {
    const id = `${type}\u0000${version}`;
    let use = this.#uses.get(id);
    if (!use) {
      use = { type, version, published: 0, consumed: 0 };
      this.#uses.set(id, use);
      const fields = { type, schemaversion: version, side, ...(note ? { note } : {}) };
      this.logger.warn(fields, 'deprecated schema version in use');
    }
    if (side === 'publish') use.published++;
    else use.consumed++;
  }

  /** The counts so far, in order of first use. */
  list(): DeprecatedUse[] {
    return [...this.#uses.values()].map((u) => ({ ...u }));
  }
}
