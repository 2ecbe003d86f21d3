// The worker, hearth.js and the demo page against a stand-in wasm package (mock-pkg/), in
// headless Chromium with WebGPU: the protocol, progress, caching, streaming, Stop, errors and
// the subgroups patch, in seconds and without the Rust build. browser.test.mjs runs the real one.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startServer, webDir } from './support/server.mjs';
import { launch } from './support/chromium.mjs';

let tmp, server, browser, page;
const MODEL_SIZE = 2 * 1024 * 1024 + 5;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hearth-mock-'));
  const www = path.join(tmp, 'www');
  const models = path.join(tmp, 'models');
  fs.mkdirSync(path.join(www, 'pkg'), { recursive: true });
  fs.mkdirSync(models);
  for (const f of fs.readdirSync(path.join(webDir, 'www'))) {
    const src = path.join(webDir, 'www', f);
    if (fs.statSync(src).isFile()) fs.copyFileSync(src, path.join(www, f));
  }
  fs.copyFileSync(path.join(webDir, 'tests', 'mock-pkg', 'hearth_web.js'), path.join(www, 'pkg', 'hearth_web.js'));
  const gguf = Buffer.alloc(MODEL_SIZE, 7);
  gguf.write('GGUF', 0);
  fs.writeFileSync(path.join(models, 'SmolLM2-135M-Instruct.Q4_1.gguf'), gguf);
  fs.writeFileSync(path.join(models, 'garbage.gguf'), Buffer.alloc(1000, 1));
  fs.writeFileSync(path.join(models, 'oom.gguf'), gguf);
  server = await startServer(['--www', www, '--models', models]);
  browser = await launch({ webgpu: true });
  page = browser.page;
});

after(async () => {
  await browser?.close();
  await server?.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

const state = () => page.evaluate(() => window.hearthDemo.state);
const waitState = (states, timeout = 30_000) =>
  page.waitForFunction((s) => s.includes(window.hearthDemo.state), states, { timeout, polling: 50 });

async function loadDefault() {
  await page.locator('#load:not([disabled])').waitFor();
  await page.click('#load');
  await waitState(['ready', 'error']);
  assert.equal(await state(), 'ready', await page.textContent('#status'));
}

async function chat(prompt, maxTokens = 12) {
  await page.fill('#max-tokens', String(maxTokens));
  await page.fill('#prompt', prompt);
  await page.press('#prompt', 'Enter');
  await page.waitForFunction(() => window.hearthDemo.state !== 'generating', null, { timeout: 30_000 });
  return page.evaluate(() => window.hearthDemo.lastResult);
}

test('load from the server: progress reaches 100%, stats carry the worker timings', async () => {
  await page.goto(server.url);
  await page.evaluate(() => {
    // Record every value the page gives the progress bar.
    window.fractions = [];
    const bar = document.getElementById('progress');
    const { get, set } = Object.getOwnPropertyDescriptor(HTMLProgressElement.prototype, 'value');
    Object.defineProperty(bar, 'value', {
      get: () => get.call(bar),
      set: (v) => { window.fractions.push(v); set.call(bar, v); },
    });
  });
  await loadDefault();
  const [value, max] = await page.$eval('#progress', (p) => [p.value, p.max]);
  assert.equal(value, max);
  const fractions = await page.evaluate(() => window.fractions);
  assert.ok(fractions.some((f) => f > 0 && f <= 0.7), 'download share before upload');
  assert.deepEqual([...fractions].sort((a, b) => a - b), fractions, 'progress never goes back');
  assert.equal(fractions.at(-1), 1);
  assert.match(await page.textContent('#progress-label'), /100%/);

  const stats = await page.evaluate(() => window.hearthDemo.stats);
  assert.equal(stats.from_cache, false);
  assert.equal(stats.cached, true);
  assert.ok(stats.download_ms >= 0 && stats.total_load_ms >= stats.download_ms);
  assert.equal(stats.model.weight_bytes, MODEL_SIZE, 'BigInt values arrive as numbers');
  assert.deepEqual(stats.mock.names, ['SmolLM2-135M-Instruct.Q4_1.gguf']);
  // SwiftShader has subgroups: the runtime is told so and the device got the feature.
  assert.equal(stats.web_subgroups, true);
  assert.equal(stats.mock.options.web_subgroups, true);
  assert.equal(stats.mock.options.kv_dtype, 'f16', 'the page passes its KV cache choice');
  assert.equal(stats.mock.device_subgroups, true);
  assert.match(await page.textContent('#adapter-info'), /Mock adapter/);
});

test('chat streams into bubbles and sends the whole conversation each turn', async () => {
  const first = await chat('Which ocean is the largest?');
  assert.equal(first.completion_tokens, 12);
  assert.ok(Array.isArray(first.token_ids));
  assert.equal(await state(), 'ready');
  const bubbles = await page.locator('#messages .msg').allTextContents();
  assert.deepEqual(bubbles, ['Which ocean is the largest?', first.text]);
  assert.match(await page.textContent('#toks'), /prefill 100\.0 tok\/s · decode 50\.0 tok\/s/);

  const second = await chat('And the smallest?', 3);
  assert.match(second.text, /^\[3 messages\]/, 'user, assistant, user');
});

test('Stop cancels a running generation', async () => {
  await page.fill('#max-tokens', '100000');
  await page.fill('#prompt', 'Go on forever');
  await page.click('#send');
  await waitState(['generating']);
  assert.equal(await page.locator('#stop').isEnabled(), true);
  await page.waitForFunction(() => document.querySelector('.msg.pending')?.textContent.length > 20);
  await page.click('#stop');
  await waitState(['ready', 'error']);
  const r = await page.evaluate(() => window.hearthDemo.lastResult);
  assert.equal(r.finish_reason, 'cancelled');
  assert.ok(r.completion_tokens < 100000);
  assert.equal(await page.locator('#stop').isDisabled(), true);
});

test('a reload loads from the cache; progress then covers the upload alone', async () => {
  await page.reload();
  await loadDefault();
  const stats = await page.evaluate(() => window.hearthDemo.stats);
  assert.equal(stats.from_cache, true);
  const [value, max] = await page.$eval('#progress', (p) => [p.value, p.max]);
  assert.equal(value, max);
});

test('?no_subgroups=1 on the page URL keeps the engine and the device off subgroups', async () => {
  await page.goto(server.url + '?no_subgroups=1');
  await loadDefault();
  const stats = await page.evaluate(() => window.hearthDemo.stats);
  assert.equal(stats.mock.options.no_subgroups, true);
  assert.equal(stats.mock.options.web_subgroups, false);
  assert.equal(stats.mock.device_subgroups, false);
  assert.equal(typeof stats.web_adapter.vendor, 'string', "the browser's adapter info");
  await page.goto(server.url);
});

test('the API: progress fractions, overlapping generations, no_subgroups, unload', async () => {
  const r = await page.evaluate(async () => {
    const { Hearth } = await import('/hearth.js');
    const progress = [];
    const engine = await Hearth.load('/models/SmolLM2-135M-Instruct.Q4_1.gguf', {
      no_subgroups: true,
      onProgress: (p) => progress.push(p),
    });
    const stats = await engine.stats();
    const a = engine.chat([{ role: 'user', content: 'hi' }], { max_tokens: 50, delay_ms: 5 });
    // A second generation while the first runs: the worker runs both at once.
    const b = engine.complete('hello', { max_tokens: 5 });
    const second = await b.result.then((v) => v.completion_tokens, (e) => e.message);
    const chunks = [];
    for await (const c of a) chunks.push(c);
    const first = await a.result;
    const peak = (await engine.stats()).mock.peak_generations;
    // Breaking out of for-await stops the generation.
    const c = engine.complete('x', { max_tokens: 100000, delay_ms: 1 });
    let n = 0;
    for await (const _ of c) if (++n === 3) break;
    const broken = await c.result;
    await engine.unload();
    const after = await engine.stats().then(() => 'resolved', (e) => e.message);
    return { progress, stats, second, peak, chunks: chunks.length, first, broken: broken.finish_reason, after };
  });
  assert.equal(r.progress.at(-1).fraction, 1);
  assert.ok(r.progress.every((p) => p.fraction >= 0 && p.fraction <= 1));
  assert.equal(r.progress.find((p) => p.phase === 'upload').fraction >= 0.7, !!r.progress.find((p) => p.phase === 'download'));
  assert.equal(r.stats.web_subgroups, false);
  assert.equal(r.stats.mock.device_subgroups, false, 'no_subgroups leaves the device without them');
  assert.equal(r.second, 5, 'the second generation completes while the first runs');
  assert.equal(r.peak, 2, 'both generations were in the engine at once');
  assert.equal(r.chunks, 50);
  assert.equal(r.first.finish_reason, 'length');
  assert.equal(r.broken, 'cancelled');
  assert.match(r.after, /unloaded/);
});

test('local files load without caching', async () => {
  await page.setInputFiles('#model-file', path.join(tmp, 'models', 'SmolLM2-135M-Instruct.Q4_1.gguf'));
  await loadDefault();
  const stats = await page.evaluate(() => window.hearthDemo.stats);
  assert.equal(stats.from_cache, false);
  assert.equal(stats.cached, false);
  assert.equal(stats.download_ms, 0);
  assert.equal(stats.source, 'SmolLM2-135M-Instruct.Q4_1.gguf');
  await page.setInputFiles('#model-file', []);
});

test('load errors reach the page with clear messages', async () => {
  const tryLoad = async (url) => {
    await page.fill('#model-url', url);
    await page.click('#load');
    await waitState(['ready', 'error']);
    return { state: await state(), status: await page.textContent('#status') };
  };
  const missing = await tryLoad('/models/missing.gguf');
  assert.equal(missing.state, 'error');
  assert.match(missing.status, /HTTP 404 .*\/models\/missing\.gguf/);
  assert.match((await tryLoad('/models/garbage.gguf')).status, /not a GGUF file/);
  assert.match((await tryLoad('/models/oom.gguf')).status, /WebAssembly heap \(4 GiB max\) ran out of memory/);
  assert.equal(await page.locator('#load').isEnabled(), true, 'another load can be tried');
});

test('Clear cache reports what it removed', async () => {
  await page.click('#clear-cache');
  await page.waitForFunction(() => /Removed|empty/.test(document.getElementById('status').textContent));
  assert.match(await page.textContent('#status'), /Removed \d+ cached models? \([\d.]+ MiB\)/);
  await page.click('#clear-cache');
  await page.waitForFunction(() => /already empty/.test(document.getElementById('status').textContent));
});

test('no unexpected console errors', () => {
  const unexpected = browser.errors.filter((e) => !/Failed to load resource: .*404/.test(e));
  assert.deepEqual(unexpected, []);
});
