/**
 * The gateway API as the dashboard calls it: same origin, relative URLs (so that the page works
 * behind a path prefix), an optional bearer token kept in sessionStorage, and errors turned into
 * {@link ApiError}s carrying the gateway's `{ error: { code, message } }`.
 */

const TOKEN_KEY = 'agentbus.dashboard.token';

/** An error answer of the gateway, or a request that got no answer (`code` NETWORK). */
export class ApiError extends Error {
  constructor(status, code, message, data) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.data = data;
  }
}

/** The token for this tab, or '' without one. */
export function getToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) ?? '';
  } catch {
    return '';
  }
}

/** Keeps `token` for this tab (sessionStorage: gone when the tab closes); '' forgets it. */
export function setToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage refused (privacy mode): the token then lives only in memory.
  }
  memoryToken = token;
}

let memoryToken = '';

function currentToken() {
  return getToken() || memoryToken;
}

const authListeners = new Set();

/** Calls `listener(error)` whenever the API answers 401 (no token, or one it refused). */
export function onAuthRequired(listener) {
  authListeners.add(listener);
}

/**
 * Calls the API. `path` is relative to the page (`v1/stats`, `health?deep=1`). Resolves with the
 * parsed JSON body; rejects with an ApiError for an error status (unless listed in `accept`) or
 * when the gateway does not answer.
 */
export async function api(path, { method = 'GET', body, accept = [], signal } = {}) {
  const headers = { accept: 'application/json, application/health+json' };
  const token = currentToken();
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'same-origin',
      redirect: 'error',
      signal,
    });
  } catch (err) {
    if (err?.name === 'AbortError') throw err;
    throw new ApiError(0, 'NETWORK', `the gateway did not answer (${err?.message ?? err})`);
  }
  const text = await res.text();
  let json;
  try {
    json = text === '' ? undefined : JSON.parse(text);
  } catch {
    json = undefined;
  }
  if (res.ok || accept.includes(res.status)) return json;
  const wire = json && typeof json === 'object' ? json.error : undefined;
  const error = new ApiError(
    res.status,
    typeof wire?.code === 'string' ? wire.code : `HTTP_${res.status}`,
    typeof wire?.message === 'string' ? wire.message : res.statusText || 'request failed',
    wire?.data,
  );
  if (res.status === 401) for (const listener of authListeners) listener(error, Boolean(token));
  throw error;
}
