// A Hugging Face checkpoint picked as files (config.json, tokenizer files, sharded
// safetensors + index) runs in the browser, and its greedy continuation equals the one
// Hugging Face transformers produced for the same tiny model (tests/fixtures/hf/*/golden.json,
// made by tests/golden/make_golden.py): an oracle independent of Hearth.
//
//   node --test web/tests/browser-hf.test.mjs

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startServer, repoDir } from './support/server.mjs';
import { launch } from './support/chromium.mjs';

const CASE = path.join(repoDir, 'tests', 'fixtures', 'hf', 'qwen2_bias_sharded');

let server;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server?.stop();
});

const golden = JSON.parse(fs.readFileSync(path.join(CASE, 'golden.json'), 'utf8'));
const files = fs.readdirSync(CASE).filter((f) => f !== 'golden.json').map((f) => path.join(CASE, f));

// Picks the case's files on the page, runs `inPage({prompt, n})` there (the golden
// prompt and length), checks the console stayed clean and returns its result.
async function withPickedFiles(inPage, caseFiles = files, caseGolden = golden) {
  const browser = await launch({ webgpu: true });
  const { page, errors, logs } = browser;
  try {
    await page.goto(server.url);
    await page.setInputFiles('#model-file', caseFiles);
    const out = await page.evaluate(inPage, { prompt: caseGolden.prompt, n: caseGolden.greedy_ids.length });
  assert.deepEqual(errors, [], `console errors:\n${logs.slice(-20).join('\n')}`);
    return out;
  } finally {
    await browser.close();
  }
}

test('HF safetensors files from the file picker: greedy ids equal transformers', { timeout: 10 * 60_000 }, async () => {
  assert.ok(files.some((f) => f.endsWith('model.safetensors.index.json')), 'the case is sharded');
  const out = await withPickedFiles(async ({ prompt, n }) => {
    const { Hearth } = await import('./hearth.js');
    const picked = Array.from(document.querySelector('#model-file').files);
    const engine = await Hearth.load(picked);
    try {
      const stream = engine.complete(prompt, { temperature: 0, max_tokens: n, ignore_eos: true });
      const streamed = [];
      for await (const chunk of stream) streamed.push(chunk.tokenId);
      return { result: await stream.result, streamed, stats: await engine.stats() };
    } finally {
      await engine.unload();
    }
  });

  assert.match(out.stats.model.desc, /Hugging Face Qwen2/);
  assert.equal(out.result.prompt_tokens, golden.prompt_ids.length, 'prompt tokenized as transformers did');
  assert.deepEqual(out.result.token_ids, golden.greedy_ids);
  assert.deepEqual(out.streamed, golden.greedy_ids, 'every token was streamed');
});

test('KV dtype and a draft model from files: speculative greedy ids equal transformers', { timeout: 10 * 60_000 }, async () => {
  const out = await withPickedFiles(async ({ prompt, n }) => {
    const { Hearth } = await import('./hearth.js');
    const picked = Array.from(document.querySelector('#model-file').files);
    // 8-wide heads: q8 needs whole 32-element groups, so it must be refused clearly.
    const refused = await Hearth.load(picked, { kv_dtype: 'q8' }).then(
      (e) => e.unload().then(() => 'loaded'),
      (err) => err.message,
    );
    const badName = await Hearth.load(picked, { kv_dtype: 'q3' }).then(
      (e) => e.unload().then(() => 'loaded'),
      (err) => err.message,
    );
    const engine = await Hearth.load(picked, { kv_dtype: 'f32' });
    try {
      const noDraft = await engine.complete(prompt, { temperature: 0, max_tokens: n, ignore_eos: true, draft: 'model' })
        .result.then(() => 'ran', (err) => err.message);
      const progress = [];
      const attached = await engine.attachDraft(picked, { onProgress: (p) => progress.push(p.fraction) });
      const stream = engine.complete(prompt, { temperature: 0, max_tokens: n, ignore_eos: true, draft: 'model' });
      const streamed = [];
      for await (const chunk of stream) streamed.push(chunk.tokenId);
      return { refused, badName, noDraft, attached, progress, result: await stream.result, streamed, stats: await engine.stats() };
    } finally {
      await engine.unload();
    }
  });

  assert.match(out.refused, /head_dim 8.*kv_dtype: 'f16'/, `q8 on 8-wide heads names the web option: ${out.refused}`);
  assert.match(out.badName, /kv_dtype.*q3/, out.badName);
  assert.match(out.noDraft, /draft/i, 'draft: "model" without a draft model is a clear error');
  assert.equal(out.stats.kv.dtype, 'f32');
  assert.match(out.attached.draft.desc, /Hugging Face Qwen2/);
  assert.equal(out.progress.at(-1), 1, 'the draft upload reports progress to the end');
  assert.deepEqual(out.result.token_ids, golden.greedy_ids, 'speculative greedy ids equal plain greedy (transformers)');
  assert.deepEqual(out.streamed, golden.greedy_ids);
  const spec = out.stats.last.spec;
  assert.ok(spec.drafted > 0 && spec.accepted === spec.drafted, `the model as its own draft accepts every draft: ${JSON.stringify(spec)}`);
});

// A mixture-of-experts checkpoint (Qwen2-MoE: 8 experts, 2 per token, a gated shared
// expert; bf16) runs in the browser's WebGPU with the greedy ids of transformers.
test('a mixture-of-experts model from files: greedy ids equal transformers', { timeout: 10 * 60_000 }, async () => {
  const dir = path.join(repoDir, 'tests', 'fixtures', 'moe', 'qwen2moe_shared_bf16');
  const moeGolden = JSON.parse(fs.readFileSync(path.join(dir, 'golden.json'), 'utf8'));
  const moeFiles = fs.readdirSync(dir).filter((f) => f !== 'golden.json').map((f) => path.join(dir, f));
  const out = await withPickedFiles(async ({ prompt, n }) => {
    const { Hearth } = await import('./hearth.js');
    const picked = Array.from(document.querySelector('#model-file').files);
    const engine = await Hearth.load(picked);
    try {
      const stream = engine.complete(prompt, { temperature: 0, max_tokens: n, ignore_eos: true });
      for await (const chunk of stream) void chunk;
      return { result: await stream.result };
    } finally {
      await engine.unload();
    }
  }, moeFiles, moeGolden);
  assert.equal(out.result.prompt_tokens, moeGolden.prompt_ids.length, 'prompt tokenized as transformers did');
  assert.deepEqual(out.result.token_ids, moeGolden.greedy_ids);
});
