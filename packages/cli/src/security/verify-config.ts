import { type FSWatcher, readFileSync, watch } from 'node:fs';
import { basename, dirname } from 'node:path';
import { ConfigError, VerificationPipeline } from '@agentbus/core';
import { Option } from 'commander';
import { errorLine } from '../cli-error.js';
import type { Lifecycle } from '../lifecycle.js';
import type { Output } from '../output.js';

/** The environment variable naming the verification config when `--verify-config` is absent. */
export const VERIFY_CONFIG_ENV = 'AGENTBUS_VERIFY_CONFIG';

export const VERIFY_CONFIG_DEFAULTS = Object.freeze({
  /** Changes to the file within this time make one reload (an editor writes in several steps). */
  debounceMs: 100,
});

/** The `--verify-config <file>` global option. */
export function verifyConfigOption(): Option {
  return new Option(
    '--verify-config <file>',
    'verification rules (YAML: maxBytes, maxDepth, maxKeys, deny, redact) checked on publish and on tail; ' +
      'tail reloads the file when it changes and on SIGHUP',
  ).env(VERIFY_CONFIG_ENV);
}

/** The config error with the file named first, and the YAML line and column when known. */
function inFile(path: string, err: unknown): ConfigError {
  if (!(err instanceof ConfigError)) {
    return new ConfigError(`verify config ${path}: ${err instanceof Error ? err.message : String(err)}`);
  }
  const { line, column } = (err.data ?? {}) as { line?: unknown; column?: unknown };
  const at = typeof line === 'number' && !/\bline\b/.test(err.message) ? ` (line ${line}, column ${column})` : '';
  return new ConfigError(`verify config ${path}: ${err.message}${at}`, { data: err.data });
}

function readConfig(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError(`verify config ${path}: cannot read it (${code ?? (err as Error).message})`);
  }
}

/** A verification config as loaded from its file. */
export interface LoadedVerifyConfig {
  readonly path: string;
  readonly pipeline: VerificationPipeline;
  /** The text the pipeline was built from. */
  readonly text: string;
}

/** A pipeline loaded from the YAML file at `path`; a ConfigError naming the file and the rule's path otherwise. */
export function loadVerifyConfig(path: string): LoadedVerifyConfig {
  if (path.trim() === '') throw new ConfigError('verify config: the file name is empty');
  const text = readConfig(path);
  try {
    return { path, pipeline: new VerificationPipeline({ config: text }), text };
  } catch (err) {
    throw inFile(path, err);
  }
}

function describeRules(pipeline: VerificationPipeline): string {
  const n = pipeline.rules.length;
  return `${n} rule${n === 1 ? '' : 's'}${n === 0 ? '' : `: ${pipeline.rules.join(', ')}`}`;
}

/**
 * Keeps the pipeline of `config` in step with its file for as long as `lifecycle` runs: reloads it on
 * SIGHUP and when the file changes (the directory is watched, so an editor that replaces the file
 * is noticed too; changes are debounced and an unchanged text is not reloaded). A file that does
 * not load leaves the running rules in place: the error is printed on stderr and the command
 * carries on. Each reload is reported on stderr.
 */
export function reloadVerifyConfigOnChange(
  config: LoadedVerifyConfig,
  lifecycle: Lifecycle,
  out: Output,
  signals: Pick<NodeJS.Process, 'on' | 'off'> = process,
): void {
  const { pipeline, path } = config;
  let loaded = config.text;

  const reload = (why: 'SIGHUP' | 'change') => {
    let text: string;
    try {
      text = readConfig(path);
      if (why === 'change' && text === loaded) return;
      try {
        pipeline.reload(text);
      } catch (err) {
        throw inFile(path, err);
      }
    } catch (err) {
      out.note(`${errorLine(err)}; keeping the previous rules (${describeRules(pipeline)})`);
      return;
    }
    loaded = text;
    out.note(`reloaded verify config ${path} (${why}): ${describeRules(pipeline)}`);
  };

  const onHup = () => reload('SIGHUP');
  signals.on('SIGHUP', onHup);
  lifecycle.defer(() => {
    signals.off('SIGHUP', onHup);
  });

  let timer: NodeJS.Timeout | undefined;
  const name = basename(path);
  let watcher: FSWatcher | undefined;
  try {
    watcher = watch(dirname(path), { persistent: false }, (_event, filename) => {
      if (filename !== null && filename.toString() !== name) return;
      clearTimeout(timer);
      timer = setTimeout(() => reload('change'), VERIFY_CONFIG_DEFAULTS.debounceMs);
    });
    watcher.on('error', (err) => {
      out.note(`warning: stopped watching ${path} (${err.message}); send SIGHUP to reload it`);
      watcher?.close();
    });
  } catch (err) {
    out.note(`warning: cannot watch ${path} (${(err as Error).message}); send SIGHUP to reload it`);
  }
  lifecycle.defer(() => {
    clearTimeout(timer);
    watcher?.close();
  });
}
