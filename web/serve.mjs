#!/usr/bin/env node
// Static server for the Hearth web demo: web/www at "/", the models folder at "/models/".
//
//   node web/serve.mjs [--port 8123] [--host 127.0.0.1] [--www DIR] [--models DIR]
//
// No dependencies. --port 0 picks a free port; the URL it listens on is printed as
// "Hearth web demo: http://HOST:PORT/" (the browser test reads that line).
// WebGPU needs a secure context: 127.0.0.1/localhost count as one, other hosts need HTTPS.

import http from 'node:http';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

const MIME = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.ts': 'text/plain; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.md': 'text/markdown; charset=utf-8',
  '.wasm': 'application/wasm',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.gguf': 'application/octet-stream',
  '.safetensors': 'application/octet-stream',
};

function parseArgs(argv) {
  const opts = {
    port: 8123,
    host: '127.0.0.1',
    www: path.join(here, 'www'),
    models: process.env.HEARTH_MODELS || path.join(here, '..', 'models'),
  };
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i].split(/=(.*)/s);
    const value = () => (inline !== undefined ? inline : argv[++i]);
    switch (flag) {
      case '--port': opts.port = Number(value()); break;
      case '--host': opts.host = value(); break;
      case '--www': opts.www = value(); break;
      case '--models': opts.models = value(); break;
      case '-h': case '--help':
        console.log('usage: node web/serve.mjs [--port 8123] [--host 127.0.0.1] [--www DIR] [--models DIR]');
        process.exit(0);
        break;
      default:
        console.error(`serve.mjs: unknown argument ${argv[i]}`);
        process.exit(2);
    }
  }
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) {
    console.error('serve.mjs: --port needs a number between 0 and 65535');
    process.exit(2);
  }
  opts.www = path.resolve(opts.www);
  opts.models = path.resolve(opts.models);
  return opts;
}

// Maps a URL path below a root to a file path, or null when it would leave the root
// (.., encoded slashes, NUL bytes, or a symlink pointing outside).
async function resolveInside(root, urlPath) {
  let rel;
  try {
    rel = decodeURIComponent(urlPath);
  } catch {
    return null;
  }
  if (rel.includes('\0') || rel.includes('\\')) return null;
  const candidate = path.resolve(root, '.' + path.posix.normalize('/' + rel));
  if (candidate !== root && !candidate.startsWith(root + path.sep)) return null;
  try {
    const [realRoot, realFile] = await Promise.all([fsp.realpath(root), fsp.realpath(candidate)]);
    if (realFile !== realRoot && !realFile.startsWith(realRoot + path.sep)) return null;
    return realFile;
  } catch {
    return candidate; // missing: the caller's stat answers 404
  }
}

function etagOf(stat) {
  return `"${stat.size.toString(16)}-${Math.floor(stat.mtimeMs).toString(16)}"`;
}

// Single "bytes=a-b" / "bytes=a-" / "bytes=-n" range; multi-range requests get the whole file.
function parseRange(header, size) {
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  let start, end;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0) return null;
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  }
  if (start >= size || start > end) return null;
  return { start, end };
}

function sendText(res, status, text, head) {
  const body = Buffer.from(text + '\n');
  res.writeHead(status, {
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': body.length,
    ...(head || {}),
  });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

async function listModels(dir) {
  let entries = [];
  try {
    entries = await fsp.readdir(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  const out = [];
  for (const e of entries) {
    if (!e.name.endsWith('.gguf')) continue;
    try {
      const file = await resolveInside(dir, '/' + e.name);
      if (!file) continue; // a symlink out of the folder: served as 403, so not listed
      const st = await fsp.stat(file);
      if (st.isFile()) out.push({ name: e.name, url: '/models/' + encodeURIComponent(e.name), size: st.size });
    } catch {
      // vanished or dangling symlink: not listed
    }
  }
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

async function sendFile(req, res, file, isModel) {
  let stat;
  try {
    stat = await fsp.stat(file);
  } catch {
    return sendText(res, 404, 'not found');
  }
  if (stat.isDirectory()) {
    const index = path.join(file, 'index.html');
    if (!isModel && fs.existsSync(index)) return sendFile(req, res, index, isModel);
    return sendText(res, 404, 'not found');
  }
  if (!stat.isFile()) return sendText(res, 404, 'not found');

  const etag = etagOf(stat);
  const headers = {
    'Content-Type': MIME[path.extname(file).toLowerCase()] || 'application/octet-stream',
    'ETag': etag,
    'Last-Modified': stat.mtime.toUTCString(),
    'Accept-Ranges': 'bytes',
    // The page and its wasm change during development; the worker keeps model weights in the Cache API.
    'Cache-Control': 'no-cache',
  };
  const inm = req.headers['if-none-match'];
  if (inm && inm.split(',').some((t) => t.trim() === etag || t.trim() === '*')) {
    res.writeHead(304, headers);
    return res.end();
  }

  let start = 0;
  let end = stat.size - 1;
  let status = 200;
  const ifRange = req.headers['if-range'];
  if (req.headers.range && (!ifRange || ifRange === etag)) {
    const range = parseRange(req.headers.range, stat.size);
    if (range === null) {
      return sendText(res, 416, 'range not satisfiable', { 'Content-Range': `bytes */${stat.size}` });
    }
    if (range) {
      ({ start, end } = range);
      status = 206;
      headers['Content-Range'] = `bytes ${start}-${end}/${stat.size}`;
    }
  }
  headers['Content-Length'] = stat.size === 0 ? 0 : end - start + 1;
  res.writeHead(status, headers);
  if (req.method === 'HEAD' || stat.size === 0) return res.end();
  const stream = fs.createReadStream(file, { start, end });
  stream.on('error', () => res.destroy());
  res.on('close', () => stream.destroy());
  stream.pipe(res);
}

export function createServer({ www, models }) {
  return http.createServer(async (req, res) => {
    try {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        return sendText(res, 405, 'method not allowed', { Allow: 'GET, HEAD' });
      }
      const { pathname } = new URL(req.url, 'http://localhost');
      if (pathname === '/models' || pathname === '/models/') {
        const body = Buffer.from(JSON.stringify(await listModels(models)));
        res.writeHead(200, {
          'Content-Type': 'application/json; charset=utf-8',
          'Content-Length': body.length,
          'Cache-Control': 'no-cache',
        });
        return res.end(req.method === 'HEAD' ? undefined : body);
      }
      const isModel = pathname.startsWith('/models/');
      const root = isModel ? models : www;
      const file = await resolveInside(root, isModel ? pathname.slice('/models'.length) : pathname);
      if (!file) return sendText(res, 403, 'forbidden');
      await sendFile(req, res, file, isModel);
    } catch (err) {
      console.error('serve.mjs:', err);
      if (!res.headersSent) sendText(res, 500, 'internal error');
      else res.destroy();
    }
  });
}

const isMain = process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  const opts = parseArgs(process.argv.slice(2));
  const server = createServer(opts);
  server.on('error', (err) => {
    console.error(`serve.mjs: cannot listen on ${opts.host}:${opts.port}: ${err.message}`);
    process.exit(1);
  });
  server.listen(opts.port, opts.host, () => {
    const { port } = server.address();
    const host = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
    console.log(`Hearth web demo: http://${host}:${port}/`);
    console.log(`  serving ${opts.www} at /, ${opts.models} at /models/`);
  });
  // Browsers hold keep-alive connections open, so close() would wait on them: just exit.
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));
}
