import { connect, createServer } from 'node:net';

/** Whether something accepts TCP connections at `host:port` within `timeoutMs`. */
export function reachable(host: string, port: number, timeoutMs = 1_000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/**
 * For a transport suite that needs a server: undefined when `url` answers; otherwise a skip
 * reason, announced loudly. With `CI` set an unreachable server throws instead, so the suite
 * fails: a green CI run means every transport was tested against its real server.
 */
export async function serverSkipReason(name: string, url: string, defaultPort: number): Promise<string | undefined> {
  const u = new URL(url);
  const host = u.hostname.replace(/^\[|\]$/g, '');
  const port = Number(u.port || defaultPort);
  if (await reachable(host, port)) return undefined;
  const reason = `${name} is unreachable at ${host}:${port} (start it with: bash scripts/dev-services.sh start)`;
  if (process.env.CI) throw new Error(`${reason}; CI is set, so this suite fails instead of skipping`);
  console.warn(`\n*** SKIPPING the ${name} suite: ${reason} ***\n`);
  return reason;
}

/** A TCP port nothing listens on right now (on the loopback interface), for throwaway servers. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}
