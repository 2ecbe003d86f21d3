// The demo page: pick a model, load it, chat with it. All inference goes through hearth.js.

import { Hearth } from './hearth.js';

const $ = (id) => document.getElementById(id);
const MiB = 1024 * 1024;

// Read by the browser test.
const demo = { lastResult: null, stats: null, state: 'idle' };
window.hearthDemo = demo;

let engine = null;
// The loaded HearthEngine, for the browser test's concurrent chats.
Object.defineProperty(demo, 'engine', { get: () => engine });
let stream = null;      // the running generation
let history = [];       // [{role, content}] of the whole conversation

function setState(state) {
  demo.state = state;
  document.body.dataset.state = state;
  const busy = state === 'loading' || state === 'generating';
  const usable = !!engine && !busy;
  $('load').disabled = busy || document.body.dataset.webgpu === 'missing';
  $('clear-cache').disabled = busy;
  $('send').disabled = !usable;
  $('prompt').disabled = !engine || state === 'loading';
  $('reset').disabled = !usable;
  $('stop').disabled = state !== 'generating';
}

function setStatus(text, kind = '') {
  const el = $('status');
  el.textContent = text;
  el.className = `status ${kind}`;
}

const fmtMiB = (n) => `${(n / MiB).toFixed(1)} MiB`;
const fmtRate = (x) => (Number.isFinite(x) ? x.toFixed(1) : '–');

function showProgress({ phase, loaded, total, fraction }) {
  $('progress').value = fraction;
  const pct = `${Math.floor(fraction * 100)}%`;
  let text;
  if (phase === 'download') text = `Downloading ${fmtMiB(loaded)} / ${total ? fmtMiB(total) : '?'}`;
  else if (phase === 'cache') text = loaded === total && total ? `Cached ${fmtMiB(total)}` : `Writing ${fmtMiB(total)} to the cache`;
  else text = `Uploading to the GPU: part ${loaded} / ${total}`;
  $('progress-label').textContent = `${text} (${pct})`;
}

function showAdapter(stats) {
  const rows = [];
  const add = (k, v) => rows.push([k, v]);
  const { adapter, features, limits, model, kv } = stats;
  const web = stats.web_adapter || {};
  const name = adapter.name || web.description || [web.vendor, web.architecture].filter(Boolean).join(' ') || '(unnamed)';
  add('adapter', `${name} — ${adapter.backend}${adapter.device_type ? `, ${adapter.device_type}` : ''}`);
  if (adapter.driver) add('driver', adapter.driver);
  add('shader_f16', features.shader_f16 ? (features.tiled_f16 ? 'yes (f16 prompt matmul)' : 'yes') : 'no');
  add('subgroups', features.subgroups ? `yes (${features.subgroup_min_size}–${features.subgroup_max_size})` : 'no');
  add('max storage binding', fmtMiB(limits.max_storage_binding));
  add('max buffer', fmtMiB(limits.max_buffer));
  add('workgroup invocations', limits.max_workgroup_invocations);
  add('storage buffers / stage', limits.max_storage_buffers_per_stage);
  add('model', `${model.arch}, ${model.layers} layers, hidden ${model.hidden}, vocab ${model.vocab}`);
  add('weights', fmtMiB(model.weight_bytes));
  add('KV cache', `${kv.tokens} tokens, ${kv.dtype}`);
  if (stats.draft) add('draft model', `${stats.draft.desc} (${fmtMiB(stats.draft.weight_bytes)})`);
  const from = stats.from_cache ? 'cache' : stats.download_ms ? 'network' : 'files';
  add('load', `${(stats.total_load_ms / 1000).toFixed(1)} s (weights from ${from}${stats.download_ms ? ` in ${(stats.download_ms / 1000).toFixed(1)} s` : ''})`);

  const dl = $('adapter-info');
  dl.replaceChildren();
  for (const [k, v] of rows) {
    const dt = document.createElement('dt');
    dt.textContent = k;
    const dd = document.createElement('dd');
    dd.textContent = String(v);
    if (k === 'model' && model.desc) dd.title = model.desc;
    dl.append(dt, dd);
  }
}

function addBubble(role, text = '') {
  const el = document.createElement('div');
  el.className = `msg ${role}`;
  el.textContent = text;
  $('messages').append(el);
  el.scrollIntoView({ block: 'end' });
  return el;
}

function samplingOptions() {
  const num = (id) => {
    const v = $(id).value.trim();
    return v === '' ? undefined : Number(v);
  };
  const opts = {
    max_tokens: num('max-tokens'),
    temperature: $('greedy').checked ? 0 : num('temperature'),
    top_p: num('top-p'),
    top_k: num('top-k'),
    min_p: num('min-p'),
    seed: num('seed'),
  };
  for (const k of Object.keys(opts)) if (opts[k] === undefined || Number.isNaN(opts[k])) delete opts[k];
  if ($('draft').checked) opts.draft = demo.stats?.draft ? 'model' : 'ngram';
  return opts;
}

// Engine switches for debugging, from the page URL: ?no_subgroups=1&no_f16=1&kv_memory_mib=256
function debugOptions() {
  const params = new URLSearchParams(location.search);
  const flag = (name) => params.has(name) && !['0', 'false'].includes(params.get(name));
  const opts = {};
  if (flag('no_subgroups')) opts.no_subgroups = true;
  if (flag('no_f16')) opts.no_f16 = true;
  if (params.get('kv_memory_mib')) opts.kv_memory_mib = Number(params.get('kv_memory_mib'));
  return opts;
}

async function loadModel() {
  const files = $('model-file').files;
  const url = $('model-url').value.trim();
  const source = files && files.length ? files : url;
  if (!source) {
    setStatus('Choose a model: a URL or local files.', 'warn');
    return;
  }
  const label = files && files.length ? [...files].map((f) => f.name).join(', ') : url;
  setState('loading');
  setStatus(`Loading ${label}…`);
  $('progress').value = 0;
  $('progress-label').textContent = 'Starting…';
  if (engine) {
    const old = engine;
    engine = null;
    await old.unload().catch(() => {});
  }
  try {
    engine = await Hearth.load(source, {
      kv_dtype: $('kv-dtype').value,
      ...debugOptions(),
      onProgress: showProgress,
      onNotice: (message) => setStatus(message, 'warn'),
    });
    const draftFiles = $('draft-file').files;
    if (draftFiles && draftFiles.length) {
      setStatus(`Loading the draft model ${[...draftFiles].map((f) => f.name).join(', ')}…`);
      $('progress').value = 0;
      await engine.attachDraft(draftFiles, { onProgress: showProgress });
    }
    demo.stats = await engine.stats();
    showAdapter(demo.stats);
    history = [];
    $('messages').replaceChildren();
    setState('ready');
    const s = demo.stats;
    setStatus(`Ready: ${label.split('/').pop()}, loaded in ${(s.total_load_ms / 1000).toFixed(1)} s.`, 'ok');
    $('prompt').focus();
  } catch (err) {
    engine = null;
    $('progress-label').textContent = 'Failed';
    setState('error');
    setStatus(`Loading failed: ${err.message}`, 'error');
  }
}

async function send() {
  const text = $('prompt').value.trim();
  if (!text || !engine || demo.state === 'generating') return;
  $('prompt').value = '';
  history.push({ role: 'user', content: text });
  addBubble('user', text);
  const bubble = addBubble('assistant pending');
  setState('generating');
  setStatus('Generating…');
  $('toks').textContent = 'prefill…';

  let tokens = 0;
  let firstAt = 0;
  stream = engine.chat(history, samplingOptions());
  try {
    for await (const chunk of stream) {
      tokens++;
      const now = performance.now();
      if (!firstAt) firstAt = now;
      bubble.textContent += chunk.text;
      if (tokens > 1) $('toks').textContent = `${fmtRate((tokens - 1) / ((now - firstAt) / 1000))} tok/s · ${tokens} tokens`;
      bubble.scrollIntoView({ block: 'end' });
    }
    const result = await stream.result;
    demo.lastResult = result;
    // The final text is authoritative: streamed chunks may hold back bytes of a stop string.
    bubble.textContent = result.text;
    bubble.classList.remove('pending');
    if (result.finish_reason === 'cancelled') bubble.classList.add('cancelled');
    history.push({ role: 'assistant', content: result.text });
    $('toks').textContent =
      `prefill ${fmtRate(result.prefill_tok_s)} tok/s · decode ${fmtRate(result.decode_tok_s)} tok/s · ` +
      `TTFT ${Math.round(result.ttft_ms)} ms · ${result.prompt_tokens} + ${result.completion_tokens} tokens (${result.finish_reason})`;
    demo.stats = await engine.stats();
    setState('ready');
    setStatus(result.finish_reason === 'cancelled' ? 'Stopped.' : 'Ready.', 'ok');
  } catch (err) {
    history.pop(); // the failed turn is not part of the conversation
    bubble.classList.remove('pending');
    bubble.classList.add('failed');
    bubble.textContent = `(failed: ${err.message})`;
    $('toks').textContent = ' ';
    setState('error');
    setStatus(`Generation failed: ${err.message}`, 'error');
  } finally {
    stream = null;
    setState(demo.state);
  }
}

async function clearCache() {
  try {
    const { entries, bytes } = await Hearth.clearCache();
    setStatus(entries ? `Removed ${entries} cached model${entries > 1 ? 's' : ''} (${fmtMiB(bytes)}).` : 'The model cache was already empty.', 'ok');
  } catch (err) {
    setStatus(`Clearing the cache failed: ${err.message}`, 'error');
  }
}

// The server's model list (serve.mjs answers GET /models/ with JSON); other servers may not.
async function fillModelPicker() {
  const select = $('model-select');
  try {
    const res = await fetch('/models/', { headers: { accept: 'application/json' } });
    if (!res.ok || !(res.headers.get('content-type') || '').includes('json')) return;
    const models = await res.json();
    if (!Array.isArray(models) || !models.length) return;
    const other = select.lastElementChild;
    select.replaceChildren();
    for (const m of models) {
      const opt = new Option(`${m.name} (${fmtMiB(m.size)})`, m.url);
      select.append(opt);
    }
    select.append(other);
    select.value = $('model-url').value;
    if (select.value !== $('model-url').value) select.value = '';
  } catch {
    // No listing: the default entry stays.
  }
}

function wireUp() {
  $('load').addEventListener('click', loadModel);
  $('clear-cache').addEventListener('click', clearCache);
  $('chat-form').addEventListener('submit', (e) => {
    e.preventDefault();
    send();
  });
  $('prompt').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    }
  });
  $('stop').addEventListener('click', () => stream?.stop());
  $('reset').addEventListener('click', () => {
    history = [];
    $('messages').replaceChildren();
    $('toks').textContent = ' ';
  });
  $('model-select').addEventListener('change', () => {
    const v = $('model-select').value;
    if (v) $('model-url').value = v;
    else $('model-url').focus();
  });
  $('model-url').addEventListener('input', () => {
    $('model-select').value = [...$('model-select').options].some((o) => o.value === $('model-url').value) ? $('model-url').value : '';
  });
  const greedy = () => {
    for (const id of ['temperature', 'top-p', 'top-k', 'min-p', 'seed']) $(id).disabled = $('greedy').checked;
  };
  $('greedy').addEventListener('change', greedy);
  greedy();
}

async function main() {
  wireUp();
  setState('idle');
  fillModelPicker();
  const support = await Hearth.isSupported();
  if (!support.ok) {
    document.body.dataset.webgpu = 'missing';
    const banner = $('no-webgpu');
    banner.textContent =
      `This demo needs WebGPU, which this browser does not offer: ${support.reason}. ` +
      'Try a recent Chrome or Edge, or Firefox/Safari with WebGPU enabled.';
    banner.hidden = false;
    setState('error');
    setStatus('WebGPU is not available.', 'error');
    return;
  }
  document.body.dataset.webgpu = 'ok';
  setState('idle');
  setStatus('Pick a model and press Load.');
}

main();
