import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { GatewayContext } from '../context.js';
import { HttpError } from '../http-errors.js';

/**
 * The dashboard's static files. They live outside `src` (tsc leaves them alone); from both
 * `src/dashboard/` and `dist/dashboard/` the folder is two levels up.
 */
export const DASHBOARD_DIR: URL = new URL('../../dashboard/', import.meta.url);

/** Content types of the files the dashboard serves; files with another extension are never served. */
const CONTENT_TYPES: Readonly<Record<string, string>> = Object.freeze({
  html: 'text/html; charset=utf-8',
  js: 'text/javascript; charset=utf-8',
  css: 'text/css; charset=utf-8',
  svg: 'image/svg+xml',
});

/** Names an asset may have: one path segment, lower-case, no dots but the extension's. */
const ASSET_NAME = /^[a-z0-9][a-z0-9-]*\.(js|css|svg)$/;

/**
 * The Content-Security-Policy of the dashboard: its own scripts, styles and API only; no inline
 * script or style, no plugins, no framing.
 */
export const DASHBOARD_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "font-src 'none'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

/** Headers every dashboard response carries. */
export const DASHBOARD_SECURITY_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  'content-security-policy': DASHBOARD_CSP,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
  'permissions-policy': 'camera=(), microphone=(), geolocation=(), payment=()',
});

/** One file the dashboard serves, read once at start. */
export interface DashboardAsset {
  readonly name: string;
  readonly contentType: string;
  readonly body: Buffer;
  readonly etag: string;
}

/**
 * Reads the dashboard's files: `index.html` and the assets whose names match {@link ASSET_NAME}
 * (nothing else in the folder, no sub-folder). The map is the whitelist: a request names a key of
 * it or gets a 404, so no path ever reaches the file system.
 */
export function loadDashboardAssets(dir: URL = DASHBOARD_DIR): Map<string, DashboardAsset> {
  const assets = new Map<string, DashboardAsset>();
  const root = fileURLToPath(dir);
  for (const name of readdirSync(root)) {
    if (name !== 'index.html' && !ASSET_NAME.test(name)) continue;
    const file = new URL(name, dir);
    if (!statSync(file).isFile()) continue;
    const body = readFileSync(file);
    const ext = name.slice(name.lastIndexOf('.') + 1);
    const etag = `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"`;
    assets.set(name, { name, contentType: CONTENT_TYPES[ext] as string, body, etag });
  }
  if (!assets.has('index.html')) throw new Error(`dashboard: no index.html in ${root}`);
  return assets;
}

function send(request: FastifyRequest, reply: FastifyReply, asset: DashboardAsset): FastifyReply {
  reply
    .headers(DASHBOARD_SECURITY_HEADERS)
    // Not fingerprinted: the browser keeps them but asks (If-None-Match) before each use.
    .header('cache-control', 'no-cache')
    .header('etag', asset.etag);
  const inm = request.headers['if-none-match'];
  if (inm?.split(',').some((t) => t.trim().replace(/^W\//, '') === asset.etag)) return reply.code(304).send();
  return reply.code(200).header('content-type', asset.contentType).send(asset.body);
}

/**
 * The dashboard at `/`: a static page (HTML, CSS, plain ES modules) reading the gateway's own API.
 * `GET /` is the page, `GET /dashboard/<asset>` its scripts and styles. Files are whitelisted and
 * read into memory at start; every response carries a strict CSP and the usual security headers.
 */
export async function registerDashboard(app: FastifyInstance, _ctx: GatewayContext): Promise<void> {
  const assets = loadDashboardAssets();
  const index = assets.get('index.html') as DashboardAsset;
  const notFound = (path: string) => new HttpError('NOT_FOUND', `no dashboard asset ${path}`);

  app.get('/', (request, reply) => send(request, reply, index));
  // Relative redirects, so that the page also works behind a reverse proxy's path prefix.
  app.get('/dashboard', (_request, reply) => reply.redirect('./', 301));
  app.get('/dashboard/', (_request, reply) => reply.redirect('../', 301));
  app.get<{ Params: { file: string } }>('/dashboard/:file', async (request, reply) => {
    const { file } = request.params;
    const asset = file === 'index.html' ? undefined : assets.get(file);
    if (!asset) throw notFound(file.slice(0, 100));
    return send(request, reply, asset);
  });
}
