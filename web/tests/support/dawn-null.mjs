// The wasm engine in Node on Dawn's null backend (npm's `webgpu` package): no shader runs,
// but every WGSL module goes through Tint, the compiler Chrome uses, with shader-f16 and
// subgroups available, and under WebGPU's default limits (8 storage buffers per stage,
// 128 MiB bindings). SwiftShader in the browser test has neither f16 nor those limits, so
// this is where the f16 and subgroup shaders meet Tint's rules (constant ranges,
// uniformity, enable directives) before a real browser on a real GPU does.
//
// Node has no worker globals, FileReaderSync or Blob you can read synchronously; the
// shims below give wgpu and the engine just enough of them.

import fs from 'node:fs';
import path from 'node:path';
import { repoDir, webDir } from './server.mjs';

const PKG = path.join(webDir, 'www', 'pkg');

// A Blob over bytes already in memory, readable synchronously by the FileReaderSync shim.
class BytesBlob extends Blob {
  constructor(bytes) {
    super([]);
    this.bytes = bytes;
  }
  get size() {
    return this.bytes.length;
  }
  slice(start, end) {
    return new BytesBlob(this.bytes.subarray(start, end));
  }
}

class FileReaderSyncShim {
  readAsArrayBuffer(blob) {
    return blob.bytes.slice().buffer;
  }
  readAsText(blob) {
    return new TextDecoder().decode(blob.bytes);
  }
}

let wasm = null;

/** Initialises the wasm package once, on a Dawn null-backend GPU. */
export async function nullBackendEngine() {
  if (wasm) return wasm;
  if (!fs.existsSync(path.join(PKG, 'hearth_web_bg.wasm'))) {
    throw new Error('web/www/pkg is missing: build it with bash scripts/build-web.sh');
  }
  const { create, globals } = await import('webgpu');
  Object.assign(globalThis, globals);
  const gpu = create(['backend=null']);
  // wgpu looks for the GPU through a worker's navigator.
  globalThis.WorkerGlobalScope = class {};
  Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true });
  globalThis.FileReaderSync = FileReaderSyncShim;
  // Same patch as hearth-worker.js: wgpu does not request "subgroups" itself.
  const original = GPUAdapter.prototype.requestDevice;
  GPUAdapter.prototype.requestDevice = function requestDevice(descriptor = {}) {
    const features = [...(descriptor.requiredFeatures || [])];
    if (this.features.has('subgroups') && !features.includes('subgroups')) features.push('subgroups');
    return original.call(this, { ...descriptor, requiredFeatures: features });
  };
  const mod = await import(path.join(PKG, 'hearth_web.js'));
  await mod.default({ module_or_path: fs.readFileSync(path.join(PKG, 'hearth_web_bg.wasm')) });
  wasm = { Engine: mod.Engine, adapter: await gpu.requestAdapter() };
  return wasm;
}

/// A file anywhere in the checkout as a Blob.
export function fileBlob(full) {
  return new BytesBlob(new Uint8Array(fs.readFileSync(full)));
}

export function modelBlob(file) {
  const full = path.join(repoDir, 'models', file);
  if (!fs.existsSync(full)) throw new Error(`models/${file} is missing: fetch it with bash scripts/hearth.sh fetch`);
  return new BytesBlob(new Uint8Array(fs.readFileSync(full)));
}
