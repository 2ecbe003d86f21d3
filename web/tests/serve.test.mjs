// web/serve.mjs: MIME types, HEAD, ETag, ranges, the model listing, and staying inside its roots.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { startServer } from './support/server.mjs';

let server;
let tmp;
const weights = Buffer.from(Array.from({ length: 1000 }, (_, i) => i % 251));

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hearth-serve-'));
  const www = path.join(tmp, 'www');
  const models = path.join(tmp, 'models');
  fs.mkdirSync(path.join(www, 'pkg'), { recursive: true });
  fs.mkdirSync(models);
  fs.writeFileSync(path.join(www, 'index.html'), '<!doctype html><title>t</title>');
  fs.writeFileSync(path.join(www, 'app.js'), 'export {};');
  fs.writeFileSync(path.join(www, 'pkg', 'm_bg.wasm'), Buffer.from([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]));
  fs.writeFileSync(path.join(tmp, 'secret.txt'), 'outside the roots');
  fs.symlinkSync(path.join(tmp, 'secret.txt'), path.join(models, 'escape.gguf'));
  fs.writeFileSync(path.join(models, 'tiny.gguf'), weights);
  fs.writeFileSync(path.join(models, 'notes.txt'), 'not a model');
  server = await startServer(['--www', www, '--models', models]);
});

after(async () => {
  await server?.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

// fetch() normalises "..", so traversal attempts go through a raw request.
function rawGet(rawPath) {
  const { hostname, port } = new URL(server.url);
  return new Promise((resolve, reject) => {
    http.get({ hostname, port, path: rawPath }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    }).on('error', reject);
  });
}

test('serves www at / with the right MIME types', async () => {
  const index = await fetch(server.url);
  assert.equal(index.status, 200);
  assert.match(index.headers.get('content-type'), /^text\/html/);
  const js = await fetch(new URL('app.js', server.url));
  assert.match(js.headers.get('content-type'), /^text\/javascript/);
  const wasm = await fetch(new URL('pkg/m_bg.wasm', server.url));
  assert.equal(wasm.headers.get('content-type'), 'application/wasm');
  assert.equal((await wasm.arrayBuffer()).byteLength, 8);
});

test('HEAD and GET of a model give its length and an ETag; If-None-Match gives 304', async () => {
  const url = new URL('models/tiny.gguf', server.url);
  const head = await fetch(url, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(head.headers.get('content-length'), String(weights.length));
  const etag = head.headers.get('etag');
  assert.ok(etag, 'an ETag');
  const get = await fetch(url);
  assert.equal(get.headers.get('etag'), etag);
  assert.deepEqual(Buffer.from(await get.arrayBuffer()), weights);
  const again = await fetch(url, { headers: { 'if-none-match': etag } });
  assert.equal(again.status, 304);
});

test('range requests', async () => {
  const url = new URL('models/tiny.gguf', server.url);
  const part = await fetch(url, { headers: { range: 'bytes=10-19' } });
  assert.equal(part.status, 206);
  assert.equal(part.headers.get('content-range'), `bytes 10-19/${weights.length}`);
  assert.deepEqual(Buffer.from(await part.arrayBuffer()), weights.subarray(10, 20));
  const tail = await fetch(url, { headers: { range: 'bytes=-5' } });
  assert.deepEqual(Buffer.from(await tail.arrayBuffer()), weights.subarray(-5));
  const open = await fetch(url, { headers: { range: 'bytes=990-' } });
  assert.deepEqual(Buffer.from(await open.arrayBuffer()), weights.subarray(990));
  const bad = await fetch(url, { headers: { range: 'bytes=5000-6000' } });
  assert.equal(bad.status, 416);
  await bad.arrayBuffer();
});

test('GET /models/ lists the .gguf files as JSON', async () => {
  const res = await fetch(new URL('models/', server.url));
  assert.match(res.headers.get('content-type'), /^application\/json/);
  const list = await res.json();
  const names = list.map((m) => m.name);
  assert.ok(names.includes('tiny.gguf'));
  assert.ok(!names.includes('notes.txt'));
  assert.ok(!names.includes('escape.gguf'), 'a symlink out of the folder is not listed');
  const tiny = list.find((m) => m.name === 'tiny.gguf');
  assert.equal(tiny.size, weights.length);
  assert.equal(tiny.url, '/models/tiny.gguf');
});

test('paths cannot leave the roots', async () => {
  for (const p of ['/../secret.txt', '/%2e%2e/secret.txt', '/models/../../secret.txt', '/models/..%2f..%2fsecret.txt', '/models/%2e%2e%5csecret.txt']) {
    const res = await rawGet(p);
    assert.notEqual(res.status, 200, p);
    assert.ok(!res.body.includes('outside the roots'), p);
  }
  const link = await rawGet('/models/escape.gguf');
  assert.equal(link.status, 403, 'a symlink out of the models folder is refused');
});

test('only GET and HEAD', async () => {
  const res = await fetch(server.url, { method: 'POST', body: 'x' });
  assert.equal(res.status, 405);
  await res.text();
});
