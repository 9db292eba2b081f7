import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const dir = fileURLToPath(new URL('../../../examples/', import.meta.url));
const examples = readdirSync(dir)
  .filter((f) => f.endsWith('.ts'))
  .map((f) => f.slice(0, -3));

describe('examples', () => {
  it('has examples', () => {
    expect(examples.length).toBeGreaterThan(0);
  });
  it.each(examples)(
    '%s runs to the end with one command on the embedded store',
    (name) => {
      const r = spawnSync(process.execPath, [`${dir}run.mjs`, name], { encoding: 'utf8', timeout: 60_000 });
      if (r.status !== 0) throw new Error(`exit ${r.status ?? r.signal}: ${r.stderr.slice(-2_000)}`);
      expect(r.stdout.trim().length).toBeGreaterThan(0);
    },
    90_000,
  );
});
