import type { DeadLetterView } from '@agentbus/core';

export { type DeadLetterView, viewDeadLetter } from '@agentbus/core';

import { renderTable, type Style, truncate } from '../output.js';

/** The `dlq list` table. */
export function deadLetterTable(views: readonly DeadLetterView[], style: Style): string[] {
  return renderTable(
    ['ID', 'DEAD-LETTERED', 'GROUP', 'TOPIC', 'REASON', 'ATTEMPTS', 'ERROR'],
    views.map((v) => [
      v.id,
      style.dim(v.deadLetteredAt),
      v.group,
      style.cyan(v.topic),
      style.yellow(v.reason),
      String(v.attempts),
      truncate(v.error ?? '', 60),
    ]),
    ['left', 'left', 'left', 'left', 'left', 'right', 'left'],
  );
}

/** The `dlq show` text: one field per line, then the envelope (or the raw body) as JSON. */
export function deadLetterDetails(v: DeadLetterView, style: Style): string[] {
  const field = (name: string, value: string | number | undefined) =>
    value === undefined ? [] : [`${style.bold(name.padEnd(15))}${value}`];
  const lines = [
    ...field('id', v.id),
    ...field('reason', style.yellow(v.reason)),
    ...field('error', v.error),
    ...field('attempts', v.attempts),
    ...field('group', v.group),
    ...field('topic', style.cyan(v.topic)),
    ...field('message id', v.messageId),
    ...field('published', v.publishedAt),
    ...field('dead-lettered', v.deadLetteredAt),
    ...field('priority', v.priority),
    ...field('expires', v.expiresAt),
    ...field('bytes', v.bytes),
    ...field('headers', JSON.stringify(v.headers)),
  ];
  if (v.envelope) lines.push(style.bold('envelope'), ...JSON.stringify(v.envelope, null, 2).split('\n'));
  else lines.push(...field('undecodable', v.decodeError), ...field('body (base64)', v.bodyBase64));
  return lines;
}
