// Every kernel the engine builds, compiled by Tint (Chrome's WGSL compiler) under each
// combination of shader-f16 and subgroups, within WebGPU's default limits. Loading ends
// with a warm-up step that creates every pipeline a request uses; any shader or validation
// error fails Engine.load with "GPU error: ...". See support/dawn-null.mjs.
//
//   node --test web/tests/tint-shaders.test.mjs

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { nullBackendEngine, modelBlob, fileBlob } from './support/dawn-null.mjs';
import { repoDir } from './support/server.mjs';

const MODEL = 'SmolLM2-135M-Instruct.Q4_1.gguf';

const CASES = [
  { name: 'f16 + subgroups', no_f16: false, subgroups: true },
  { name: 'f16 only', no_f16: false, subgroups: false },
  { name: 'subgroups only', no_f16: true, subgroups: true },
  { name: 'neither (the f32, shared-memory fallbacks)', no_f16: true, subgroups: false },
  // The quantized KV caches' write and attention kernels.
  { name: 'q8 KV cache', no_f16: false, subgroups: true, kv_dtype: 'q8' },
  { name: 'q4 KV cache, no f16', no_f16: true, subgroups: false, kv_dtype: 'q4' },
];

for (const c of CASES) {
  test(`Tint accepts every shader: ${c.name}`, { timeout: 120_000 }, async () => {
    const { Engine, adapter } = await nullBackendEngine();
    assert.ok(adapter.features.has('shader-f16') && adapter.features.has('subgroups'),
      'the null adapter offers shader-f16 and subgroups');
    // Pipeline creation checks workgroup size and memory against these: WebGPU's defaults.
    const l = adapter.limits;
    assert.deepEqual(
      [l.maxComputeInvocationsPerWorkgroup, l.maxComputeWorkgroupStorageSize, l.maxStorageBuffersPerShaderStage, l.maxBindGroups],
      [256, 16384, 8, 4]);
    // The null device holds every buffer in host memory; a small KV budget keeps it lean.
    const options = { no_f16: c.no_f16, no_subgroups: !c.subgroups, web_subgroups: c.subgroups, kv_memory_mib: 16 };
    if (c.kv_dtype) options.kv_dtype = c.kv_dtype;
    const engine = await Engine.load([modelBlob(MODEL)], [MODEL], options, () => {});
    try {
      const s = engine.stats();
      assert.equal(s.features.shader_f16, !c.no_f16);
      // Not a CPU adapter: with shader-f16 the tiled prompt kernel is built in its f16-math form.
      assert.notEqual(s.adapter.device_type, 'Cpu');
      assert.equal(s.features.tiled_f16, !c.no_f16);
      assert.equal(s.features.subgroups, c.subgroups);
      assert.equal(s.limits.max_storage_buffers_per_stage, 8);
      assert.equal(s.model.layers, 30);
    } finally {
      engine.free();
    }
  });
}

// A mixture-of-experts model (Qwen2-MoE: router, grouping, expert matrices in their
// grouped forms, combine with a shared expert) under each f16/subgroups combination.
const MOE = path.join(repoDir, 'tests', 'fixtures', 'moe', 'qwen2moe_shared_bf16');
for (const c of CASES.filter((c) => !c.kv_dtype)) {
  test(`Tint accepts the mixture-of-experts shaders: ${c.name}`, { timeout: 120_000 }, async () => {
    const { Engine } = await nullBackendEngine();
    const names = fs.readdirSync(MOE).filter((f) => f !== 'golden.json');
    const blobs = names.map((f) => fileBlob(path.join(MOE, f)));
    const options = { no_f16: c.no_f16, no_subgroups: !c.subgroups, web_subgroups: c.subgroups, kv_memory_mib: 16 };
    const engine = await Engine.load(blobs, names, options, () => {});
    try {
      const s = engine.stats();
      assert.notEqual(s.adapter.device_type, 'Cpu');
      assert.equal(s.features.subgroups, c.subgroups);
    } finally {
      engine.free();
    }
  });
}
