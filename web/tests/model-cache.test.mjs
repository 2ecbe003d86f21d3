// The worker's model cache (www/model-cache.js) in a real Chromium, without WebGPU or the
// wasm package: download + cache, reuse, stale entries, offline reuse, quota fallback, errors.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startServer } from './support/server.mjs';
import { launch } from './support/chromium.mjs';

const SIZE = 3 * 1024 * 1024 + 17; // more than one progress step, not a round number
let tmp, models, server, browser, page;

const modelFile = () => path.join(models, 'tiny.gguf');
function writeModel(fill, size = SIZE) {
  fs.writeFileSync(modelFile(), Buffer.alloc(size, fill));
  // ETags come from size and mtime: make sure a rewrite gets a new mtime.
  const t = new Date(Date.now() + Math.floor(Math.random() * 1e6));
  fs.utimesSync(modelFile(), t, t);
}

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hearth-cache-'));
  models = path.join(tmp, 'models');
  fs.mkdirSync(models);
  writeModel(1);
  server = await startServer(['--models', models]);
  browser = await launch({ webgpu: false });
  page = browser.page;
  await page.goto(server.url);
  await page.evaluate(async () => {
    window.cacheApi = await import('/model-cache.js');
  });
});

after(async () => {
  await browser?.close();
  await server?.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

// Runs fetchModel in the page; returns what it resolved to plus the events and first byte.
function fetchModel(url) {
  return page.evaluate(async (url) => {
    const progress = [];
    const notices = [];
    try {
      const r = await window.cacheApi.fetchModel(url, {
        onProgress: (p) => progress.push(p),
        onNotice: (m) => notices.push(m),
      });
      const first = new Uint8Array(await r.blob.slice(0, 1).arrayBuffer())[0];
      return { size: r.blob.size, first, fromCache: r.fromCache, cached: r.cached, progress, notices };
    } catch (err) {
      return { error: err.message, progress, notices };
    }
  }, url);
}

const modelUrl = () => new URL('models/tiny.gguf', server.url).href;

test('first load downloads with progress and caches; the second comes from the cache', async () => {
  await page.evaluate(() => window.cacheApi.clearModelCache());
  const first = await fetchModel(modelUrl());
  assert.equal(first.error, undefined);
  assert.equal(first.size, SIZE);
  assert.equal(first.fromCache, false);
  assert.equal(first.cached, true);
  assert.deepEqual(first.notices, []);
  const downloads = first.progress.filter((p) => p.phase === 'download');
  assert.ok(downloads.length >= 2, 'download progress events');
  assert.deepEqual(downloads.at(-1), { phase: 'download', loaded: SIZE, total: SIZE, cached: false });
  assert.deepEqual(first.progress.at(-1), { phase: 'cache', loaded: SIZE, total: SIZE, cached: true });

  const second = await fetchModel(modelUrl());
  assert.equal(second.fromCache, true);
  assert.equal(second.size, SIZE);
  assert.equal(second.first, 1);
  assert.deepEqual(second.progress, [{ phase: 'cache', loaded: SIZE, total: SIZE, cached: true }]);
});

test('a changed file on the server (new ETag) replaces the cached copy', async () => {
  writeModel(2);
  const r = await fetchModel(modelUrl());
  assert.equal(r.fromCache, false);
  assert.equal(r.first, 2);
  assert.match(r.notices.join('\n'), /changed \(ETag/);
  assert.equal((await fetchModel(modelUrl())).fromCache, true);
});

test('a changed size on the server replaces the cached copy', async () => {
  writeModel(3, SIZE + 1);
  const r = await fetchModel(modelUrl());
  assert.equal(r.fromCache, false);
  assert.equal(r.size, SIZE + 1);
  assert.match(r.notices.join('\n'), /changed size/);
  writeModel(1);
  await fetchModel(modelUrl()); // back to the usual file for the tests below
});

test('a truncated cache entry is detected and downloaded again', async () => {
  await page.evaluate(async (url) => {
    const cache = await caches.open(window.cacheApi.CACHE_NAME);
    const hit = await cache.match(url);
    const short = (await hit.blob()).slice(0, 1000);
    await cache.put(url, new Response(short, { headers: hit.headers }));
  }, modelUrl());
  const r = await fetchModel(modelUrl());
  assert.equal(r.fromCache, false);
  assert.equal(r.size, SIZE);
  assert.match(r.notices.join('\n'), /incomplete/);
});

test('cache write failures (quota) fall back to the downloaded blob with a notice', async () => {
  await page.evaluate(() => window.cacheApi.clearModelCache());
  const r = await page.evaluate(async (url) => {
    const put = Cache.prototype.put;
    Cache.prototype.put = () => Promise.reject(new DOMException('the quota has been exceeded', 'QuotaExceededError'));
    try {
      const notices = [];
      const res = await window.cacheApi.fetchModel(url, { onNotice: (m) => notices.push(m) });
      return { size: res.blob.size, cached: res.cached, fromCache: res.fromCache, notices, left: await window.cacheApi.cachedModels() };
    } finally {
      Cache.prototype.put = put;
    }
  }, modelUrl());
  assert.equal(r.size, SIZE);
  assert.equal(r.cached, false);
  assert.equal(r.fromCache, false);
  assert.match(r.notices.join('\n'), /^not cached: storage quota exceeded \(the quota has been exceeded\)/);
  assert.deepEqual(r.left, []);
});

test('a model larger than the free storage is not cached', async () => {
  const r = await page.evaluate(async (url) => {
    const estimate = StorageManager.prototype.estimate;
    StorageManager.prototype.estimate = async () => ({ quota: 1024 * 1024, usage: 0 });
    try {
      const notices = [];
      const res = await window.cacheApi.fetchModel(url, { onNotice: (m) => notices.push(m) });
      return { size: res.blob.size, cached: res.cached, notices };
    } finally {
      StorageManager.prototype.estimate = estimate;
    }
  }, modelUrl());
  assert.equal(r.size, SIZE);
  assert.equal(r.cached, false);
  assert.match(r.notices.join('\n'), /not cached: the model \(3\.0 MiB\) is larger than the free browser storage \(1\.0 MiB\)/);
});

test('HTTP errors name the status and the URL', async () => {
  const url = new URL('models/missing.gguf', server.url).href;
  const r = await fetchModel(url);
  assert.match(r.error, /HTTP 404/);
  assert.ok(r.error.includes(url));
});

test('clearing the cache reports what it removed', async () => {
  await page.evaluate(() => window.cacheApi.clearModelCache());
  await fetchModel(modelUrl());
  const cleared = await page.evaluate(() => window.cacheApi.clearModelCache());
  assert.deepEqual(cleared, { entries: 1, bytes: SIZE });
  assert.deepEqual(await page.evaluate(() => window.cacheApi.clearModelCache()), { entries: 0, bytes: 0 });
});

test('offline (HEAD fails): the cached copy is used', async () => {
  await fetchModel(modelUrl());
  await page.context().setOffline(true);
  try {
    const r = await fetchModel(modelUrl());
    assert.equal(r.error, undefined);
    assert.equal(r.fromCache, true);
    assert.equal(r.size, SIZE);
  } finally {
    await page.context().setOffline(false);
  }
});

test('no console errors', () => {
  // The 404 and offline tests above make Chromium log "Failed to load resource"; those are expected.
  const unexpected = browser.errors.filter((e) => !/Failed to load resource: .*(404|ERR_INTERNET_DISCONNECTED)/.test(e));
  assert.deepEqual(unexpected, []);
});
