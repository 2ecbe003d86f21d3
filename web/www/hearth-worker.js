// Module Web Worker hosting one Hearth engine (the wasm runtime on WebGPU).
//
// Lives in a worker because Engine.load reads the weight Blobs synchronously with
// FileReaderSync (only workers have it) and because prefill/decode would otherwise stall
// the page. The protocol (see hearth.js, which is the only intended client):
//
//   in:  {type: "load", id, source: {url} | {files, names?}, options}
//        {type: "attachDraft", id, source}   a draft model for generate's draft: "model"
//        {type: "generate", id, mode: "chat" | "complete", messages | prompt, options}
//                                      several may run at once: the engine batches them
//        {type: "stop", id}            id = the generate request to stop (none: all); no reply
//        {type: "stats" | "unload" | "clearCache", id}
//   out: {type: "progress", id, phase: "download" | "cache" | "upload", loaded, total, cached}
//        {type: "token", id, text, token_id}
//        {type: "notice", id, message}
//        {type: "result", id, value} | {type: "error", id, message}

import { fetchModel, clearModelCache } from './model-cache.js';

const PKG_URL = './pkg/hearth_web.js';

let wasm = null;          // the wasm-bindgen module, once initialised
let engine = null;        // the loaded Engine
let loadInfo = null;      // timings and origin of the loaded model, merged into stats
let loading = false;
const generations = new Map(); // id -> {stop, done: Promise} of each running generate

const post = (msg) => self.postMessage(msg);

async function wasmModule() {
  if (wasm) return wasm;
  let mod;
  try {
    mod = await import(PKG_URL);
    await mod.default();
  } catch (err) {
    throw new Error(
      `could not load the Hearth wasm package (${new URL(PKG_URL, import.meta.url)}): ${err?.message || err}. ` +
      'Build it with: bash scripts/build-web.sh');
  }
  wasm = mod;
  return wasm;
}

// wgpu's web backend never asks for the WebGPU "subgroups" feature, yet the shaders use it
// when the runtime is told it is there. Adding it to every requestDevice call on adapters
// that have it is the least intrusive way in; `wantSubgroups` follows the current load.
let wantSubgroups = false;

// Installed when the worker starts, before the wasm glue is imported, so the patch is in
// place however the glue looks the method up.
function patchRequestDevice() {
  if (typeof GPUAdapter === 'undefined') return;
  const original = GPUAdapter.prototype.requestDevice;
  GPUAdapter.prototype.requestDevice = function requestDevice(descriptor = {}) {
    if (wantSubgroups && this.features.has('subgroups')) {
      const features = [...(descriptor.requiredFeatures || [])];
      if (!features.includes('subgroups')) features.push('subgroups');
      descriptor = { ...descriptor, requiredFeatures: features };
    }
    return original.call(this, descriptor);
  };
}
patchRequestDevice();

async function checkWebGPU() {
  if (!self.navigator?.gpu) {
    throw new Error('WebGPU is not available in this browser (navigator.gpu is missing)');
  }
  const adapter = await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) {
    throw new Error('no WebGPU adapter: navigator.gpu.requestAdapter() returned null (WebGPU may be disabled or blocklisted for this GPU)');
  }
  return adapter;
}

// Turns failures from deep inside the browser into messages that say which limit was hit.
// The engine's own errors already name GPU limits (maxBufferSize, maxStorageBufferBindingSize,
// GPU out of memory), so those pass through unchanged.
function describeError(err) {
  const msg = err?.message || String(err);
  const wasmHeap =
    (err instanceof RangeError && /memory|alloc/i.test(msg)) ||
    /WebAssembly\.Memory|Maximum memory size|Cannot allocate Wasm memory|Array buffer allocation failed/i.test(msg) ||
    (/out of memory/i.test(msg) && !/GPU|device|buffer/i.test(msg));
  if (wasmHeap) {
    return `the WebAssembly heap (4 GiB max) ran out of memory (${msg}); try a smaller model or a smaller kv_memory_mib`;
  }
  if (err instanceof WebAssembly.RuntimeError) {
    return `the Hearth runtime crashed (${msg}); reload the model. Details are in the browser console`;
  }
  return msg;
}

function adapterInfo(adapter) {
  const info = adapter.info || {};
  return {
    vendor: info.vendor || '',
    architecture: info.architecture || '',
    device: info.device || '',
    description: info.description || '',
  };
}

function fileName(file, index) {
  if (typeof file.name === 'string' && file.name) return file.name;
  return index === 0 ? 'model.gguf' : `file${index}`;
}

function urlFileName(url) {
  const raw = new URL(url).pathname.split('/').pop() || '';
  let last;
  try {
    last = decodeURIComponent(raw);
  } catch {
    last = raw;
  }
  // The runtime tells formats apart by file name; a URL without one is taken to be a GGUF.
  return last.toLowerCase().endsWith('.gguf') ? last : `${last || 'model'}.gguf`;
}

// The runtime's option structs reject unknown fields and a null/undefined where a value is
// expected; a caller's `{seed: undefined}` means "not set", so such keys are dropped.
function definedOnly(options, keys = Object.keys(options || {})) {
  const out = {};
  for (const key of keys) {
    if (options?.[key] !== undefined && options?.[key] !== null) out[key] = options[key];
  }
  return out;
}

const engineOptions = (options) => definedOnly(options, ['no_f16', 'no_subgroups', 'kv_memory_mib', 'kv_dtype']);

// The model's Blobs and names from a load source: a URL (downloaded through the cache) or picked files.
async function readSource(id, source) {
  if (source?.url) {
    const download = await fetchModel(source.url, {
      onProgress: (p) => post({ type: 'progress', id, ...p }),
      onNotice: (message) => post({ type: 'notice', id, message }),
    });
    return { files: [download.blob], names: [urlFileName(source.url)], download };
  }
  if (source?.files?.length) {
    const files = [...source.files];
    const names = files.map((f, i) => source.names?.[i] || fileName(f, i));
    return { files, names, download: { downloadMs: 0, fromCache: false, cached: false } };
  }
  throw new Error('load needs a source: {url} or {files: [File, ...]}');
}

const uploadProgress = (id) => (event) => {
  const p = plain(event);
  post({ type: 'progress', id, phase: p.phase || 'upload', loaded: p.done, total: p.total, cached: false });
};

async function load(id, source, options) {
  options = options || {};
  if (loading) throw new Error('a model is already loading in this worker');
  if (generations.size) throw new Error('cannot load a model while a generation is running; stop it first');
  loading = true;
  try {
    const t0 = performance.now();
    const adapter = await checkWebGPU();
    const { Engine } = await wasmModule();

    const { files, names, download } = await readSource(id, source);

    // Free the previous model's GPU buffers before the new one claims memory.
    if (engine) {
      engine.free();
      engine = null;
      loadInfo = null;
    }

    // The kernels also use the subgroup_id/num_subgroups builtins, a WGSL language
    // feature of its own that older browsers with subgroups lack.
    const subgroupIds = navigator.gpu.wgslLanguageFeatures?.has('subgroup_id') ?? false;
    wantSubgroups = !options.no_subgroups && subgroupIds;
    const webSubgroups = wantSubgroups && adapter.features.has('subgroups');

    const tUpload = performance.now();
    engine = await Engine.load(files, names, { ...engineOptions(options), web_subgroups: webSubgroups }, uploadProgress(id));
    loadInfo = {
      source: source.url || names.join(', '),
      from_cache: download.fromCache,
      cached: download.cached,
      download_ms: Math.round(download.downloadMs),
      upload_ms: Math.round(performance.now() - tUpload),
      total_load_ms: Math.round(performance.now() - t0),
      web_subgroups: webSubgroups,
      // wgpu leaves the adapter name empty on the web; the browser's own description says more.
      web_adapter: adapterInfo(adapter),
    };
    return stats();
  } finally {
    loading = false;
  }
}

async function attachDraft(id, source) {
  const eng = requireEngine();
  if (generations.size) throw new Error('cannot attach a draft model while a generation is running; stop it first');
  loading = true;
  try {
    const { files, names } = await readSource(id, source);
    await eng.attach_draft(files, names, uploadProgress(id));
    return stats();
  } finally {
    loading = false;
  }
}

function stats() {
  if (!engine) throw new Error('no model is loaded');
  return { ...plain(engine.stats()), ...loadInfo };
}

function requireEngine() {
  if (loading) throw new Error('the model is still loading');
  if (!engine) throw new Error('no model is loaded');
  return engine;
}

// wasm-bindgen hands back plain objects for structs but Map for maps and BigInt for some
// 64-bit numbers; the page wants JSON-friendly values.
function plain(value) {
  if (typeof value === 'bigint') return Number(value);
  if (value instanceof Map) return Object.fromEntries([...value].map(([k, v]) => [k, plain(v)]));
  if (Array.isArray(value)) return value.map(plain);
  if (ArrayBuffer.isView(value)) return Array.from(value, plain);
  const proto = value && typeof value === 'object' ? Object.getPrototypeOf(value) : undefined;
  if (proto === Object.prototype || proto === null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
  }
  return value;
}

async function generate(id, msg) {
  const eng = requireEngine();
  const current = { stop: false, done: null };
  generations.set(id, current);
  const onToken = (event) => {
    if (current.stop) return false;
    const ev = plain(event);
    post({ type: 'token', id, text: ev.text, token_id: ev.token_id });
    return true;
  };
  try {
    const options = definedOnly(msg.options);
    current.done = msg.mode === 'complete'
      ? eng.generate(eng.text_prompt(String(msg.prompt ?? '')), options, onToken)
      : eng.generate_chat(msg.messages || [], options, onToken);
    return plain(await current.done);
  } finally {
    generations.delete(id);
  }
}

async function unload() {
  for (const g of generations.values()) g.stop = true;
  await Promise.all([...generations.values()].map((g) => g.done?.catch(() => {})));
  const had = !!engine;
  if (engine) engine.free();
  engine = null;
  loadInfo = null;
  return { unloaded: had };
}

async function handle(msg) {
  switch (msg.type) {
    case 'load': return load(msg.id, msg.source, msg.options);
    case 'attachDraft': return attachDraft(msg.id, msg.source);
    case 'generate': return generate(msg.id, msg);
    case 'stats': return stats();
    case 'unload': return unload();
    case 'clearCache': return clearModelCache();
    default: throw new Error(`unknown message type ${JSON.stringify(msg.type)}`);
  }
}

self.onmessage = async (event) => {
  const msg = event.data || {};
  if (msg.type === 'stop') {
    for (const [id, g] of generations) if (msg.id === undefined || msg.id === id) g.stop = true;
    return;
  }
  try {
    post({ type: 'result', id: msg.id, value: await handle(msg) });
  } catch (err) {
    if (err instanceof WebAssembly.RuntimeError && engine) {
      // After a panic the wasm instance's state is not trustworthy: make the page load again.
      engine = null;
      loadInfo = null;
    }
    post({ type: 'error', id: msg.id, message: describeError(err) });
  }
};
