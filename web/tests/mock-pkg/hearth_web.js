// A stand-in for the wasm-bindgen package (www/pkg/hearth_web.js) with the same API, so the
// worker, hearth.js and the page can be tested quickly and without the Rust build.
//
// It checks what the real engine relies on: it runs in a worker (FileReaderSync), gets Blobs
// and names, and creates a GPUDevice the way wgpu does (no "subgroups" requested), so the
// worker's requestDevice patch shows in stats().mock.device_subgroups.
// Behaviour by file name: "oom" in the name throws a RangeError like a failed wasm memory.grow.

export default async function init() {}

export function version() {
  return '0.0.0-mock';
}

const WORDS = ['The', ' Pacific', ' Ocean', ' is', ' the', ' largest', ' ocean', ' on', ' Earth', '.'];

export class Engine {
  static async load(files, names, options, onProgress) {
    if (!Array.isArray(files) || !Array.isArray(names) || files.length !== names.length) {
      throw new Error('mock: files and names must be arrays of the same length');
    }
    if (!files.every((f) => f instanceof Blob)) throw new Error('mock: files must be Blobs');
    if (names.some((n) => n.includes('oom'))) throw new RangeError('WebAssembly.Memory.grow(): Maximum memory size exceeded');
    const reader = new FileReaderSync(); // throws outside a worker, as in the real engine
    const magic = new TextDecoder().decode(reader.readAsArrayBuffer(files[0].slice(0, 4)));
    if (names[0].endsWith('.gguf') && magic !== 'GGUF') throw new Error(`${names[0]}: not a GGUF file (magic ${JSON.stringify(magic)})`);

    const adapter = await navigator.gpu.requestAdapter();
    const device = await adapter.requestDevice({ requiredFeatures: [] });
    const layers = 4;
    for (let done = 1; done <= layers; done++) {
      await new Promise((r) => setTimeout(r, 5));
      onProgress({ phase: 'upload', done, total: layers });
    }
    return new Engine({ options, names, bytes: files.reduce((n, f) => n + f.size, 0), device });
  }

  constructor({ options, names, bytes, device }) {
    this.options = options;
    this.names = names;
    this.bytes = bytes;
    this.device = device;
    this.last = null;
    // Generations in flight, and the most at once (the real engine batches them).
    this.running = 0;
    this.peak = 0;
  }

  generate_chat(messages, options, onToken) {
    if (!Array.isArray(messages)) throw new Error('mock: messages must be an array');
    this.lastMessages = messages;
    return this.generate(this.text_prompt(messages.map((m) => `${m.role}: ${m.content}`).join('\n')), options, onToken);
  }

  text_prompt(text) {
    return Uint32Array.from(new TextEncoder().encode(text));
  }

  // Options: max_tokens (default 16), temperature; delay_ms (mock only) slows tokens down.
  async generate(promptIds, options, onToken) {
    if (!(promptIds instanceof Uint32Array)) throw new Error('mock: prompt ids must be a Uint32Array');
    this.running += 1;
    this.peak = Math.max(this.peak, this.running);
    try {
      const max = options.max_tokens ?? 16;
      const ids = [];
      let text = '';
      let finish = 'length';
      const turns = this.lastMessages?.length ?? 0;
      for (let i = 0; i < max; i++) {
        await new Promise((r) => setTimeout(r, options.delay_ms ?? 2));
        const piece = i === 0 && turns > 1 ? `[${turns} messages] ${WORDS[0]}` : WORDS[i % WORDS.length];
        if (onToken({ text: piece, token_id: 1000 + (i % WORDS.length) }) === false) {
          finish = 'cancelled';
          break;
        }
        ids.push(1000 + (i % WORDS.length));
        text += piece;
      }
      this.last = { prefill_tok_s: 100, decode_tok_s: 50, prompt_tokens: promptIds.length, completion_tokens: ids.length };
      return {
        text,
        token_ids: Uint32Array.from(ids),
        prompt_tokens: promptIds.length,
        completion_tokens: ids.length,
        finish_reason: finish,
        tool_calls: [],
        prefill_tok_s: 100,
        decode_tok_s: 50,
        ttft_ms: 3,
      };
    } finally {
      this.running -= 1;
    }
  }

  stats() {
    return {
      adapter: { name: 'Mock adapter', backend: 'BrowserWebGpu', driver: '', device_type: 'Cpu' },
      features: { shader_f16: false, subgroups: this.device.features.has('subgroups'), subgroup_min_size: 4, subgroup_max_size: 4 },
      limits: { max_storage_binding: 1 << 30, max_buffer: 1 << 30, max_workgroup_invocations: 256, max_storage_buffers_per_stage: 10 },
      model: { desc: 'mock 1M', arch: 'llama', layers: 4, hidden: 64, vocab: 256, context_length: 2048, weight_bytes: BigInt(this.bytes) },
      kv: { dtype: 'f32', blocks: 16, block_size: 16, tokens: 256 },
      load_ms: 20,
      last: this.last,
      mock: { options: this.options, names: this.names, device_subgroups: this.device.features.has('subgroups'), peak_generations: this.peak },
    };
  }

  free() {
    this.device.destroy();
  }
}
