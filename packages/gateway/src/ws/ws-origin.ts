/**
 * Whether a browser origin may open a socket. Without an `Origin` header (agents, not browsers)
 * always. With `allowed` undefined, only an origin whose host is the gateway's own `Host`; with a
 * list, only the origins on it (`*` allows any).
 */
export function isOriginAllowed(
  origin: string | undefined,
  host: string | undefined,
  allowed: readonly string[] | undefined,
): boolean {
  if (origin === undefined) return true;
  if (allowed === undefined) {
    if (host === undefined) return false;
    try {
      return new URL(origin).host.toLowerCase() === host.toLowerCase();
    } catch {
      return false;
    }
  }
  if (allowed.includes('*')) return true;
  const normalized = origin.toLowerCase().replace(/\/+$/, '');
  return allowed.some((a) => a.toLowerCase().replace(/\/+$/, '') === normalized);
}
