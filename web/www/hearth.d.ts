// Types of the main-thread API in hearth.js.

export interface SupportResult {
  ok: boolean;
  /** Why WebGPU cannot be used, when ok is false. */
  reason?: string;
}

export interface LoadProgress {
  /** "download": bytes from the network; "cache": writing to / found in the Cache API;
   *  "upload": parts sent to the GPU (the embedding, each layer, the output head). */
  phase: 'download' | 'cache' | 'upload';
  loaded: number;
  total: number;
  /** Share of the whole load done, 0..1; exactly 1 once Hearth.load resolves. */
  fraction: number;
}

export interface LoadOptions {
  onProgress?: (progress: LoadProgress) => void;
  /** Things that did not go the usual way but did not fail the load, e.g. "not cached: ...". */
  onNotice?: (message: string) => void;
  /** Force the f32 kernels even when the adapter has shader-f16. */
  no_f16?: boolean;
  /** Do not use WebGPU subgroups even when the adapter has them. */
  no_subgroups?: boolean;
  /** KV cache budget in MiB. */
  kv_memory_mib?: number;
  /** KV cache element type: 'f16' (default), 'q8' (0.53x the bytes), 'q4' (0.31x) or 'f32'. */
  kv_dtype?: 'f16' | 'q8' | 'q4' | 'f32';
  /** Where hearth-worker.js lives, when not next to hearth.js. */
  workerUrl?: string | URL;
}

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | 'tool' | string;
  /** May be null on an assistant message that only made calls. */
  content: string | null;
  /** An assistant message's calls, as a result's `tool_calls` gave them. */
  tool_calls?: ToolCall[];
  /** A `tool` message: the id of the call it answers. */
  tool_call_id?: string;
  name?: string;
}

/** A function the model may call (OpenAI's shape). */
export interface Tool {
  type: 'function';
  function: { name: string; description?: string; parameters?: object };
}

export interface ToolCall {
  id: string;
  type: 'function';
  /** `arguments` is JSON text; with `tool_choice` 'required' or a named function it always parses and satisfies `parameters`. */
  function: { name: string; arguments: string };
}

export type ToolChoice = 'auto' | 'none' | 'required' | { type: 'function'; function: { name: string } };

/**
 * Sampling options, OpenAI names. Unset fields take the library's defaults (docs/API.md),
 * the same as `hearth run`: greedy (temperature 0) and max_tokens 256, capped by the context.
 */
export interface GenerateOptions {
  max_tokens?: number;
  /** 0 (the default) is greedy. */
  temperature?: number;
  top_p?: number;
  top_k?: number;
  min_p?: number;
  seed?: number;
  stop?: string | string[];
  presence_penalty?: number;
  frequency_penalty?: number;
  repetition_penalty?: number;
  ignore_eos?: boolean;
  /** Speculative decoding: 'ngram' (prompt lookup), 'model' (needs attachDraft) or 'off' (default). */
  draft?: 'ngram' | 'model' | 'off';
  /**
   * Structured output, as OpenAI's `response_format`: the reply is a JSON object, or JSON that
   * satisfies `json_schema.schema`. A schema Hearth cannot compile rejects the call, naming the problem.
   */
  response_format?: ResponseFormat;
  /** Structured output from a grammar in llama.cpp's GBNF (`root` is the start rule); not with `response_format`. */
  grammar?: string;
  /**
   * Functions the model may call (chat only). They reach the model's chat template (Qwen2.5/3, Hermes,
   * Llama 3.x and Mistral templates render them; other models get them in a system instruction), and
   * the reply is parsed into the result's `tool_calls`; streamed chunks carry only the text outside calls.
   */
  tools?: Tool[];
  /** 'auto' (default): the model decides; 'required' or a named function: a grammar forces a valid call. */
  tool_choice?: ToolChoice;
  /** More than one call per reply (default true). */
  parallel_tool_calls?: boolean;
}

export type ResponseFormat =
  | { type: 'text' }
  | { type: 'json_object' }
  | { type: 'json_schema'; json_schema: { name: string; schema: object; strict?: boolean; description?: string } };

export interface GenerationChunk {
  /** May be "" for a token whose bytes are incomplete UTF-8 or held back by a stop string. */
  text: string;
  tokenId: number;
}

export interface GenerationResult {
  text: string;
  token_ids: number[];
  prompt_tokens: number;
  completion_tokens: number;
  /** 'tool_calls' when the reply made calls (see `tool_calls`). */
  finish_reason: 'stop' | 'length' | 'cancelled' | 'tool_calls';
  /** With `tools`: the calls the reply made ([] otherwise); `text` is then the text outside them. */
  tool_calls: ToolCall[];
  prefill_tok_s: number;
  decode_tok_s: number;
  ttft_ms: number;
}

export interface GenerationStream extends AsyncIterableIterator<GenerationChunk> {
  /** The final result; rejects when generation fails. */
  readonly result: Promise<GenerationResult>;
  /** Ends generation after the current token; result then has finish_reason "cancelled". */
  stop(): void;
}

export interface EngineStats {
  adapter: { name: string; backend: string; driver: string; device_type: string };
  /** tiled_f16: prompt-row matrix products multiply in f16 (GPUs with shader-f16). */
  features: { shader_f16: boolean; tiled_f16: boolean; subgroups: boolean; subgroup_min_size: number; subgroup_max_size: number };
  limits: {
    max_storage_binding: number;
    max_buffer: number;
    max_workgroup_invocations: number;
    max_storage_buffers_per_stage: number;
  };
  model: { desc: string; arch: string; layers: number; hidden: number; vocab: number; context_length: number; weight_bytes: number };
  kv: { dtype: string; blocks: number; block_size: number; tokens: number };
  /** Time the engine took to load (upload and warm-up), ms. */
  load_ms: number;
  /** The draft model attached with attachDraft, or null. */
  draft: { desc: string; weight_bytes: number } | null;
  last: {
    prefill_tok_s: number;
    decode_tok_s: number;
    prompt_tokens: number;
    completion_tokens: number;
    /** Speculative decoding: drafted and accepted tokens, verification steps. */
    spec: { drafted: number; accepted: number; steps: number };
  } | null;
  // Added by the worker:
  /** The URL, or the file names. */
  source: string;
  /** Whether the weights came from the Cache API instead of the network. */
  from_cache: boolean;
  /** Whether the weights are in the Cache API now. */
  cached: boolean;
  /** Time to get the weights as a Blob (download, or cache lookup), ms; 0 for Files. */
  download_ms: number;
  /** Time inside Engine.load, ms. */
  upload_ms: number;
  /** Whole load in the worker, ms. */
  total_load_ms: number;
  /** Whether the device was created with the WebGPU "subgroups" feature. */
  web_subgroups: boolean;
  /** The browser's GPUAdapterInfo (wgpu leaves adapter.name empty on the web). */
  web_adapter: { vendor: string; architecture: string; device: string; description: string };
}

export declare class HearthEngine {
  private constructor();
  /** Calls may overlap: concurrent chats and completions are batched by the engine. */
  chat(messages: ChatMessage[], options?: GenerateOptions): GenerationStream;
  complete(prompt: string, options?: GenerateOptions): GenerationStream;
  stats(): Promise<EngineStats>;
  /** Loads a draft model (same tokenizer) for `draft: 'model'`; resolves to the stats. */
  attachDraft(
    source: string | URL | Blob | File | File[] | FileList,
    options?: { onProgress?: (progress: LoadProgress) => void },
  ): Promise<EngineStats>;
  /** Frees GPU memory and ends the worker. */
  unload(): Promise<void>;
}

export declare const Hearth: {
  isSupported(): Promise<SupportResult>;
  /** A URL of a .gguf, a File/Blob of one, or Files (one .gguf, or a Hugging Face set:
   *  config.json, tokenizer.json, *.safetensors, ...). */
  load(source: string | URL | Blob | File | File[] | FileList, options?: LoadOptions): Promise<HearthEngine>;
  /** Deletes every cached model. */
  clearCache(): Promise<{ entries: number; bytes: number }>;
};

export default Hearth;
