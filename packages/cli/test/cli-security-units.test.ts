import { ConfigError, type Envelope, SignatureError, ValidationError } from '@agentbus/core';
import { describe, expect, it } from 'vitest';
import { commaList, duration } from '../src/arguments.js';
import { createStyle, type Output } from '../src/output.js';
import { refusalLine } from '../src/security/command-security.js';
import { jwtConfigError, rawSecret } from '../src/security/jwt-key-file.js';
import { warnIfExposed } from '../src/security/key-file.js';

function capture(): Output & { notes: string[] } {
  const notes: string[] = [];
  return { notes, line: () => {}, note: (t) => notes.push(t), style: createStyle(false) };
}

describe('security helpers of the CLI', () => {
  it('parses durations with a unit and refuses bare or non-positive numbers', () => {
    expect([duration('500ms'), duration('30s'), duration('15m'), duration('2h'), duration('1d')]).toEqual([
      500, 30_000, 900_000, 7_200_000, 86_400_000,
    ]);
    expect(duration('1.5s')).toBe(1500);
    for (const bad of ['15', '0s', '-1m', 'm', '1w', '']) expect(() => duration(bad), bad).toThrow(/duration/);
  });

  it('collects comma-separated lists across repeats and refuses empty items', () => {
    expect(commaList('b', commaList('a, c', undefined))).toEqual(['a', 'c', 'b']);
    expect(() => commaList('a,,b', undefined)).toThrow(/non-empty/);
  });

  it('drops one trailing newline of a text secret and keeps binary secrets byte for byte', () => {
    expect(rawSecret(Buffer.from('secret\n')).toString()).toBe('secret');
    expect(rawSecret(Buffer.from('secret\r\n')).toString()).toBe('secret');
    expect(rawSecret(Buffer.from('secret\n\n')).toString()).toBe('secret\n');
    const binary = Buffer.from([0x01, 0xff, 0x41, 0x0a]);
    expect(rawSecret(binary)).toEqual(binary);
    const notUtf8 = Buffer.from([0xc3, 0x28, 0x0a]);
    expect(rawSecret(notUtf8)).toEqual(notUtf8);
  });

  it('warns about group- or world-accessible key files, except on Windows', () => {
    const out = capture();
    warnIfExposed({ path: 'k', bytes: Buffer.alloc(0), mode: 0o600 }, 'key file', out, 'linux');
    warnIfExposed({ path: 'k', bytes: Buffer.alloc(0), mode: 0o644 }, 'key file', out, 'win32');
    expect(out.notes).toEqual([]);
    warnIfExposed({ path: 'k', bytes: Buffer.alloc(0), mode: 0o640 }, 'key file', out, 'linux');
    expect(out.notes).toEqual([
      'warning: key file k is readable or writable by group or others (mode 0640); restrict it with: chmod 600 k',
    ]);
  });

  it('describes a refused message with its check or rule and the dead-letter reason', () => {
    const env = { id: 'm1', topic: 't.x', source: 'agent' } as Envelope;
    expect(refusalLine(env, new SignatureError('message m1 is not signed', { data: { check: 'unsigned' } }))).toBe(
      'refused m1 on t.x from agent: SIGNATURE (unsigned): message m1 is not signed; dead-lettered with reason signature',
    );
    expect(refusalLine(env, new ValidationError('denied\nhere', { data: { rule: 'deny', reason: 'r' } }))).toBe(
      'refused m1 on t.x from agent: VALIDATION (deny): denied here; dead-lettered with reason validation',
    );
  });

  it('restates JWT config errors with the key file or the flag', () => {
    const flags = { 'issue.ttlMs': '--ttl', issuer: '--issuer' };
    expect(jwtConfigError(new ConfigError('too short', { path: 'keys[0].key' }), 'k.pem', flags).message).toBe(
      'key file k.pem: too short',
    );
    expect(jwtConfigError(new ConfigError('too long', { path: 'issue.ttlMs' }), 'k', flags).message).toBe(
      '--ttl: too long',
    );
    const other = new ConfigError('odd', { path: 'clockToleranceSec' });
    expect(jwtConfigError(other, 'k', flags)).toBe(other);
  });
});
