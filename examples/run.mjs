// Runs one example: `npm run example -- <name>` (examples/<name>.ts, on the embedded store).
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const name = process.argv[2];
const file = name && join(here, `${name.replace(/\.ts$/, '')}.ts`);
if (!file || !existsSync(file)) {
  const names = readdirSync(here)
    .filter((f) => f.endsWith('.ts'))
    .map((f) => f.slice(0, -3));
  process.stderr.write(`usage: npm run example -- <name>\nexamples: ${names.join(', ')}\n`);
  process.exit(2);
}
const r = spawnSync(process.execPath, ['--conditions=source', '--import', 'tsx', file, ...process.argv.slice(3)], {
  stdio: 'inherit',
});
process.exit(r.status ?? 1);
