// Hearth in the browser: the main-thread API. A thin wrapper that sends messages to
// hearth-worker.js, where the engine runs; see hearth.d.ts for the types.
//
//   const engine = await Hearth.load('/models/model.gguf', { onProgress });
//   const stream = engine.chat([{ role: 'user', content: 'Hi' }], { max_tokens: 64 });
//   for await (const chunk of stream) output.textContent += chunk.text;
//   const result = await stream.result;

import { clearModelCache } from './model-cache.js';

// Share of the progress bar given to the download when there is one; the GPU upload gets the rest.
const DOWNLOAD_SHARE = 0.7;

function progressTracker(onProgress) {
  let downloaded = false;
  let last = 0;
  const emit = (phase, loaded, total, fraction) => {
    last = Math.min(1, Math.max(last, fraction)); // never moves backwards
    onProgress?.({ phase, loaded, total, fraction: last });
  };
  return {
    update({ phase, loaded = 0, total = 0, cached }) {
      const f = total > 0 ? Math.min(1, loaded / total) : 0;
      if (phase === 'download') {
        downloaded = true;
        emit(phase, loaded, total, f * DOWNLOAD_SHARE);
      } else if (phase === 'cache') {
        // Writing to the cache (or finding the model there) sits between download and upload.
        emit(phase, loaded, total, downloaded ? DOWNLOAD_SHARE : 0);
      } else {
        emit(phase, loaded, total, f >= 1 ? 1 : downloaded ? DOWNLOAD_SHARE + f * (1 - DOWNLOAD_SHARE) : f);
      }
    },
    finish(total) {
      if (last < 1) emit('upload', total, total, 1);
    },
  };
}

function toError(message) {
  return message instanceof Error ? message : new Error(String(message));
}

function sourceMessage(source) {
  if (typeof source === 'string' || source instanceof URL) {
    return { url: new URL(source, globalThis.location?.href).href };
  }
  if (typeof FileList !== 'undefined' && source instanceof FileList) source = [...source];
  if (source instanceof Blob) source = [source];
  if (Array.isArray(source) && source.length && source.every((f) => f instanceof Blob)) {
    return { files: source, names: source.map((f, i) => f.name || (i === 0 ? 'model.gguf' : `file${i}`)) };
  }
  throw new Error('Hearth.load needs a URL, a File/Blob, or an array (or FileList) of Files');
}

// An async iterator over generated chunks, with .result and .stop(). Breaking out of a
// for-await loop stops the generation too.
class GenerationStream {
  #queue = [];
  #waiting = null;
  #finished = false;
  #failure = null;
  #stop;

  constructor(stop) {
    this.#stop = stop;
    this.result = new Promise((resolve, reject) => {
      this._resolve = resolve;
      this._reject = reject;
    });
    // Callers who only iterate still see failures there; no unhandled rejection for .result.
    this.result.catch(() => {});
  }

  _push(chunk) {
    if (this.#waiting) {
      this.#waiting.resolve({ value: chunk, done: false });
      this.#waiting = null;
    } else {
      this.#queue.push(chunk);
    }
  }

  _end(error, value) {
    this.#finished = true;
    if (error) {
      this.#failure = error;
      this._reject(error);
    } else {
      this._resolve(value);
    }
    if (this.#waiting) {
      if (error) this.#waiting.reject(error);
      else this.#waiting.resolve({ value: undefined, done: true });
      this.#waiting = null;
    }
  }

  stop() {
    if (!this.#finished) this.#stop();
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  next() {
    if (this.#queue.length) return Promise.resolve({ value: this.#queue.shift(), done: false });
    if (this.#failure) {
      const err = this.#failure;
      this.#failure = null; // thrown once; .result keeps it
      return Promise.reject(err);
    }
    if (this.#finished) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => {
      this.#waiting = { resolve, reject };
    });
  }

  async return() {
    this.stop();
    this.#queue.length = 0;
    await this.result.catch(() => {});
    return { value: undefined, done: true };
  }
}

export class HearthEngine {
  #worker;
  #nextId = 1;
  #pending = new Map(); // id -> {resolve, reject, onProgress?, onToken?}
  #onNotice;
  #closed = false;

  constructor(worker, onNotice) {
    this.#worker = worker;
    this.#onNotice = onNotice;
    worker.onmessage = (e) => this.#dispatch(e.data);
    worker.onerror = (e) => {
      e.preventDefault?.();
      this.#failAll(new Error(`the Hearth worker failed: ${e.message || 'it could not be started (see the browser console)'}`));
    };
    worker.onmessageerror = () => this.#failAll(new Error('a message from the Hearth worker could not be read'));
  }

  #dispatch(msg) {
    const entry = this.#pending.get(msg.id);
    switch (msg.type) {
      case 'progress': entry?.onProgress?.(msg); break;
      case 'token': entry?.onToken?.({ text: msg.text, tokenId: msg.token_id }); break;
      case 'notice': (entry?.onNotice || this.#onNotice)?.(msg.message); break;
      case 'result':
        this.#pending.delete(msg.id);
        entry?.resolve(msg.value);
        break;
      case 'error':
        this.#pending.delete(msg.id);
        entry?.reject(new Error(msg.message));
        break;
    }
  }

  #failAll(err) {
    for (const entry of this.#pending.values()) entry.reject(err);
    this.#pending.clear();
  }

  _request(type, fields = {}, handlers = {}, id = this.#nextId++) {
    if (this.#closed) return Promise.reject(new Error('this Hearth engine has been unloaded'));
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, ...handlers });
      this.#worker.postMessage({ type, id, ...fields });
    });
  }

  #generate(fields, options) {
    const id = this.#nextId++;
    const stream = new GenerationStream(() => this.#worker.postMessage({ type: 'stop', id }));
    const done = this._request('generate', { ...fields, options: { ...options } }, {
      onToken: (chunk) => stream._push(chunk),
    }, id);
    done.then((value) => stream._end(null, value), (err) => stream._end(toError(err)));
    return stream;
  }

  /** Chat completion over the model's chat template. */
  chat(messages, options = {}) {
    return this.#generate({ mode: 'chat', messages }, options);
  }

  /** Raw text completion. */
  complete(prompt, options = {}) {
    return this.#generate({ mode: 'complete', prompt }, options);
  }

  /**
   * Loads a draft model for speculative decoding (`draft: 'model'` in chat/complete
   * options) into the same worker and device. `source` as for Hearth.load; its
   * tokenizer must be this model's. Resolves to the stats, with `draft` set.
   */
  attachDraft(source, { onProgress } = {}) {
    return this._loadRequest('attachDraft', { source: sourceMessage(source) }, onProgress);
  }

  // A request that loads a model: its progress events become fractions of the whole load.
  async _loadRequest(type, fields, onProgress) {
    const progress = progressTracker(onProgress);
    let total = 0;
    const value = await this._request(type, fields, {
      onProgress: (p) => {
        if (p.phase === 'upload') total = p.total;
        progress.update(p);
      },
    });
    progress.finish(total);
    return value;
  }

  stats() {
    return this._request('stats');
  }

  /** Frees the GPU memory and ends the worker; the engine cannot be used afterwards. */
  async unload() {
    if (this.#closed) return;
    try {
      await this._request('unload');
    } finally {
      this.#closed = true;
      this.#failAll(new Error('this Hearth engine has been unloaded'));
      this.#worker.terminate();
    }
  }
}

export const Hearth = {
  /** Whether this browser offers WebGPU with an adapter. Never rejects. */
  async isSupported() {
    if (typeof navigator === 'undefined' || !navigator.gpu) {
      return { ok: false, reason: 'navigator.gpu is missing' };
    }
    try {
      const adapter = await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' });
      if (!adapter) return { ok: false, reason: 'no WebGPU adapter (requestAdapter() returned null)' };
      return { ok: true };
    } catch (err) {
      return { ok: false, reason: `requestAdapter() failed: ${err?.message || err}` };
    }
  },

  /**
   * Starts a worker and loads a model into it. `source`: a URL (string or URL) of a .gguf,
   * a File/Blob of one, or an array/FileList of Files (one .gguf, the shards of a split .gguf,
   * or a Hugging Face set).
   */
  async load(source, options = {}) {
    const { onProgress, onNotice, workerUrl, ...engineOptions } = options;
    const msgSource = sourceMessage(source);
    const worker = new Worker(workerUrl || new URL('./hearth-worker.js', import.meta.url), { type: 'module' });
    const engine = new HearthEngine(worker, onNotice);
    try {
      await engine._loadRequest('load', { source: msgSource, options: engineOptions }, onProgress);
    } catch (err) {
      worker.terminate();
      throw toError(err);
    }
    return engine;
  },

  /** Deletes every cached model. Resolves to {entries, bytes} removed. */
  clearCache() {
    return clearModelCache();
  },
};

export default Hearth;
