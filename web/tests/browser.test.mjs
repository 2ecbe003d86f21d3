// The demo page in headless Chromium: a greedy chat on WebGPU (SwiftShader when there is no
// GPU) must produce exactly the tokens the native CLI produces with the same kernel paths,
// and a browser without WebGPU must get a clear message instead of a broken page.
//
//   node --test web/tests/
//
// Needs /usr/bin/chromium (or HEARTH_CHROMIUM), the wasm package (bash scripts/build-web.sh),
// models/SmolLM2-135M-Instruct.Q4_1.gguf and target/release/hearth (or HEARTH_CLI).
// HEARTH_WEB_MAX_TOKENS (default 48) sets the reply length; the screenshot goes to
// ${HEARTH_ARTIFACTS:-target/artifacts}/web-chat.png; timings are printed as "web-bench: {json}".

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { startServer, repoDir, webDir } from './support/server.mjs';
import { launch, assertChromium } from './support/chromium.mjs';

const MODEL = 'SmolLM2-135M-Instruct.Q4_1.gguf';
const PROMPT = 'Which ocean is the largest?';
const MAX_TOKENS = Number(process.env.HEARTH_WEB_MAX_TOKENS || 48);
const ARTIFACTS = path.resolve(repoDir, process.env.HEARTH_ARTIFACTS || 'target/artifacts');
const CLI = path.resolve(repoDir, process.env.HEARTH_CLI || 'target/release/hearth');
// The page's debug switch: HEARTH_WEB_NO_SUBGROUPS=1 keeps the browser off subgroups too.
const PAGE_QUERY = process.env.HEARTH_WEB_NO_SUBGROUPS === '1' ? '?no_subgroups=1' : '';
const MINUTE = 60_000;

let server;

before(async () => {
  assertChromium();
  server = await startServer();
});

after(async () => {
  await server?.stop();
});

function requireFile(file, hint) {
  if (!fs.existsSync(file)) throw new Error(`${path.relative(repoDir, file)} is missing: ${hint}`);
}

// The native run with the kernels SwiftShader gets too (f32, no subgroups), so the token
// ids must match exactly.
function nativeGreedyIds() {
  const args = ['run', '--model', path.join(repoDir, 'models', MODEL), '--chat', PROMPT,
    '--temperature', '0', '--max-tokens', String(MAX_TOKENS), '--json', '--no-f16', '--no-subgroups'];
  return new Promise((resolve, reject) => {
    execFile(CLI, args, { env: { ...process.env, WGPU_BACKEND: 'vulkan' }, timeout: 10 * MINUTE, maxBuffer: 64 << 20 },
      (err, stdout, stderr) => {
        if (err) return reject(new Error(`${CLI} ${args.join(' ')} failed: ${err.message}\n${stderr.slice(-2000)}`));
        for (const line of stdout.split('\n').reverse()) {
          if (!line.trim().startsWith('{')) continue;
          try {
            const json = JSON.parse(line);
            if (Array.isArray(json.ids)) return resolve(json);
          } catch {
            // streamed text that happens to start with "{"
          }
        }
        reject(new Error(`no JSON line with "ids" in the output of ${CLI}:\n${stdout.slice(-2000)}`));
      });
  });
}

const demoState = (page) => page.evaluate(() => window.hearthDemo?.state);

async function failureContext(page, logs) {
  const status = await page.locator('#status').textContent().catch(() => '?');
  return `status line: ${status}\nlast console lines:\n${logs.slice(-20).join('\n')}`;
}

test('no WebGPU: the page says so and loading is disabled', { timeout: 2 * MINUTE }, async () => {
  const browser = await launch({ webgpu: false });
  try {
    const { page } = browser;
    await page.goto(server.url);
    const gpu = await page.evaluate(async () => {
      if (!navigator.gpu) return 'missing';
      return (await navigator.gpu.requestAdapter()) ? 'adapter' : 'no adapter';
    });
    assert.notEqual(gpu, 'adapter', 'this Chromium offers WebGPU even without the flags; the case cannot be tested here');
    const banner = page.locator('#no-webgpu');
    await banner.waitFor({ state: 'visible', timeout: 30_000 });
    assert.match(await banner.textContent(), /needs WebGPU/);
    assert.equal(await page.locator('#load').isDisabled(), true);
    assert.deepEqual(browser.errors, []);
  } finally {
    await browser.close();
  }
});

test('chat: greedy reply in the browser equals the native CLI, token for token', { timeout: 15 * MINUTE }, async () => {
  requireFile(path.join(webDir, 'www', 'pkg', 'hearth_web.js'), 'build the wasm package with: bash scripts/build-web.sh');
  requireFile(path.join(webDir, 'www', 'pkg', 'hearth_web_bg.wasm'), 'build the wasm package with: bash scripts/build-web.sh');
  requireFile(path.join(repoDir, 'models', MODEL), 'fetch it with: bash scripts/hearth.sh fetch');
  requireFile(CLI, 'build it with: cargo build --release -p hearth-cli (or set HEARTH_CLI)');

  // Before the browser starts, so both do not compete for the CPU and the timings stay honest.
  const native = await nativeGreedyIds();

  const browser = await launch({ webgpu: true });
  const { page, errors, logs } = browser;
  try {
    await page.goto(server.url + PAGE_QUERY);
    await page.locator('#load:not([disabled])').waitFor({ timeout: 60_000 });
    await page.selectOption('#model-select', `/models/${MODEL}`);
    assert.equal(await page.inputValue('#model-url'), `/models/${MODEL}`);

    await page.click('#load');
    await page.waitForFunction(() => ['ready', 'error'].includes(window.hearthDemo.state), null,
      { timeout: 10 * MINUTE, polling: 500 });
    assert.equal(await demoState(page), 'ready', `loading failed\n${await failureContext(page, logs)}`);
    assert.equal(await page.evaluate(() => document.body.dataset.state), 'ready');
    const [value, max] = await page.$eval('#progress', (p) => [p.value, p.max]);
    assert.equal(value, max, 'the progress bar reaches 100%');
    assert.match(await page.textContent('#progress-label'), /100%/);
    assert.match(await page.textContent('#adapter-info'), /subgroups/);

    await page.check('#greedy');
    await page.fill('#max-tokens', String(MAX_TOKENS));
    await page.fill('#prompt', PROMPT);
    await page.click('#send');
    await page.waitForFunction(
      () => window.hearthDemo.state === 'error' || (window.hearthDemo.lastResult && window.hearthDemo.state !== 'generating'),
      null, { timeout: 10 * MINUTE, polling: 250 });
    assert.equal(await demoState(page), 'ready', `generation failed\n${await failureContext(page, logs)}`);

    const result = await page.evaluate(() => window.hearthDemo.lastResult);
    assert.deepEqual(Array.from(result.token_ids), native.ids,
      `browser text: ${JSON.stringify(result.text)}\nnative text: ${JSON.stringify(native.text)}`);
    assert.equal(result.prompt_tokens, native.prompt_ids.length, 'same prompt length as the native chat template');
    assert.match(result.text, /Pacific/);
    const bubble = await page.locator('#messages .msg.assistant').last().textContent();
    assert.equal(bubble, result.text, 'the chat shows the reply');
    assert.match(await page.textContent('#toks'), /decode [\d.]+ tok\/s/);

    // Speculative decoding (n-gram drafts) in wasm: the same greedy tokens.
    await page.click('#reset');
    await page.check('#draft');
    await page.evaluate(() => { window.hearthDemo.lastResult = null; });
    await page.fill('#prompt', PROMPT);
    await page.click('#send');
    await page.waitForFunction(
      () => window.hearthDemo.state === 'error' || (window.hearthDemo.lastResult && window.hearthDemo.state !== 'generating'),
      null, { timeout: 10 * MINUTE, polling: 250 });
    assert.equal(await demoState(page), 'ready', `drafted generation failed\n${await failureContext(page, logs)}`);
    const drafted = await page.evaluate(() => window.hearthDemo.lastResult);
    assert.deepEqual(Array.from(drafted.token_ids), native.ids, `with drafts: ${JSON.stringify(drafted.text)}`);
    await page.uncheck('#draft');

    // Two chats at once from the page: the engine batches them, and each gets the tokens it
    // gets alone (the forward pass is batch-invariant).
    const together = await page.evaluate(async ([a, b]) => {
      const engine = window.hearthDemo.engine;
      const run = (text) => engine.chat([{ role: 'user', content: text }], { max_tokens: 12 }).result
        .then((r) => Array.from(r.token_ids));
      const alone = [await run(a), await run(b)];
      const both = await Promise.all([run(a), run(b)]);
      return { alone, both };
    }, [PROMPT, 'Name a colour of the rainbow.']);
    assert.deepEqual(together.alone[0], native.ids.slice(0, 12), 'alone, the first chat matches the native CLI');
    assert.deepEqual(together.both, together.alone, 'two concurrent chats give the ids each gives alone');
    assert.notDeepEqual(together.alone[0], together.alone[1], 'the two prompts differ');

    // Structured output through the JS API: the reply parses and follows the schema.
    const structured = await page.evaluate(async () => {
      const engine = window.hearthDemo.engine;
      const schema = {
        type: 'object',
        properties: { city: { type: 'string', maxLength: 20 }, population: { type: 'integer', minimum: 0 } },
        required: ['city', 'population'],
        additionalProperties: false,
      };
      const r = await engine.chat([{ role: 'user', content: 'Give the largest city of France as JSON.' }], {
        max_tokens: 60,
        response_format: { type: 'json_schema', json_schema: { name: 'city', schema } },
      }).result;
      let bad;
      try {
        await engine.chat([{ role: 'user', content: 'hi' }], {
          response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'strin' } } },
        }).result;
      } catch (e) {
        bad = String(e?.message ?? e);
      }
      return { text: r.text, finish: r.finish_reason, bad };
    });
    assert.equal(structured.finish, 'stop', structured.text);
    const city = JSON.parse(structured.text);
    assert.deepEqual(Object.keys(city).sort(), ['city', 'population'], structured.text);
    assert.equal(typeof city.city, 'string');
    assert.ok(Number.isInteger(city.population) && city.population >= 0, structured.text);
    assert.match(structured.bad ?? '', /strin/, 'an invalid schema rejects the call, naming the problem');

    // Tool calling through the JS API: a forced call comes back parsed, its arguments valid.
    const called = await page.evaluate(async () => {
      const engine = window.hearthDemo.engine;
      const tools = [{
        type: 'function',
        function: {
          name: 'get_weather',
          description: 'The weather in a city',
          parameters: {
            type: 'object',
            properties: { city: { type: 'string', maxLength: 20 }, unit: { enum: ['C', 'F'] } },
            required: ['city', 'unit'],
            additionalProperties: false,
          },
        },
      }];
      const r = await engine.chat([{ role: 'user', content: 'What is the weather in Paris?' }], {
        max_tokens: 80, tools, tool_choice: 'required', parallel_tool_calls: false,
      }).result;
      return { calls: r.tool_calls, finish: r.finish_reason, text: r.text };
    });
    assert.equal(called.finish, 'tool_calls', JSON.stringify(called));
    assert.equal(called.calls.length, 1, JSON.stringify(called));
    assert.equal(called.calls[0].type, 'function');
    assert.equal(called.calls[0].function.name, 'get_weather');
    const args = JSON.parse(called.calls[0].function.arguments);
    assert.deepEqual(Object.keys(args).sort(), ['city', 'unit'], JSON.stringify(args));
    assert.ok(['C', 'F'].includes(args.unit) && typeof args.city === 'string', JSON.stringify(args));

    fs.mkdirSync(ARTIFACTS, { recursive: true });
    await page.$eval('aside', (el) => { el.scrollTop = 0; }); // setting the checkbox scrolled it
    await page.screenshot({ path: path.join(ARTIFACTS, 'web-chat.png') });

    const stats = await page.evaluate(() => window.hearthDemo.stats);
    const bench = {
      browser: (await page.evaluate(() => navigator.userAgent)).match(/Chrome\/[\d.]+/)?.[0],
      adapter: stats.adapter?.name || Object.values(stats.web_adapter ?? {}).filter(Boolean).join(' '),
      backend: stats.adapter?.backend,
      shader_f16: stats.features?.shader_f16,
      subgroups: stats.features?.subgroups,
      subgroup_size: stats.features?.subgroups ? stats.features.subgroup_min_size : undefined,
      model: MODEL,
      from_cache: stats.from_cache,
      download_ms: stats.download_ms,
      engine_load_ms: stats.load_ms,
      total_load_ms: stats.total_load_ms,
      prompt_tokens: result.prompt_tokens,
      completion_tokens: result.completion_tokens,
      ttft_ms: result.ttft_ms,
      prefill_tok_s: result.prefill_tok_s,
      decode_tok_s: stats.last?.decode_tok_s ?? result.decode_tok_s,
    };
    console.log(`web-bench: ${JSON.stringify(bench)}`);

    // Stop: a long sampled reply is cut short by the Stop button.
    await page.uncheck('#greedy');
    await page.fill('#max-tokens', '400');
    await page.fill('#prompt', 'Tell me a long story about the sea.');
    await page.click('#send');
    await page.waitForFunction(() => (document.querySelector('#messages .msg.assistant.pending')?.textContent.length ?? 0) > 0,
      null, { timeout: 5 * MINUTE, polling: 100 });
    await page.click('#stop');
    await page.waitForFunction(() => window.hearthDemo.state !== 'generating', null, { timeout: 5 * MINUTE, polling: 250 });
    const stopped = await page.evaluate(() => window.hearthDemo.lastResult);
    assert.equal(await demoState(page), 'ready', `generation after Stop failed\n${await failureContext(page, logs)}`);
    assert.equal(stopped.finish_reason, 'cancelled');
    assert.ok(stopped.completion_tokens < 400, `stopped after ${stopped.completion_tokens} tokens`);

    assert.deepEqual(errors, [], 'no console errors in the page or its worker');
  } finally {
    await browser.close();
  }
});
