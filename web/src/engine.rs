//! The engine object JavaScript holds: load, prompt, generate, stats.

use std::cell::RefCell;
use std::rc::Rc;

use hearth::gpu::{GpuContext, GpuOptions};
use hearth::kv::KvDtype;
use hearth::model::forward::{ForwardOptions, LoadProgress};
use hearth::text::chat::ChatMessage;
use hearth::{Generation, Hearth, HearthError, Prompt};
use js_sys::{Array, Function, Promise};
use serde::Serialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;
use web_time::Instant;

use crate::options::{GenOptions, LoadOptions};

fn to_js(e: HearthError) -> JsValue {
    JsError::new(&e.to_string()).into()
}

fn serialize<T: Serialize>(v: &T) -> JsValue {
    // Maps come out as plain objects, u64 as numbers: what a page expects.
    let ser = serde_wasm_bindgen::Serializer::json_compatible();
    v.serialize(&ser).unwrap_or(JsValue::NULL)
}

#[derive(Clone, Serialize)]
struct LastRun {
    prefill_tok_s: f64,
    decode_tok_s: f64,
    prompt_tokens: usize,
    completion_tokens: usize,
    /// Drafted and accepted tokens (speculative decoding).
    spec: hearth::engine::SpecStats,
}

/// What `stats()` returns; fixed at load time except `last`.
#[derive(Clone, Serialize)]
struct Stats {
    adapter: serde_json::Value,
    features: serde_json::Value,
    limits: serde_json::Value,
    model: serde_json::Value,
    kv: serde_json::Value,
    load_ms: f64,
    /// The attached draft model (`attach_draft`), if any.
    draft: Option<serde_json::Value>,
    last: Option<LastRun>,
}

#[derive(Serialize)]
struct TokenOut<'a> {
    text: &'a str,
    token_id: u32,
}

#[derive(Serialize)]
struct ResultOut<'a> {
    text: &'a str,
    token_ids: &'a [u32],
    prompt_tokens: usize,
    completion_tokens: usize,
    finish_reason: hearth::engine::FinishReason,
    prefill_tok_s: f64,
    decode_tok_s: f64,
    ttft_ms: f64,
}

#[wasm_bindgen]
pub struct Engine {
    /// Borrowed mutably for the whole of a generation, across awaits; a second
    /// call meanwhile gets a "busy" error instead of a panic.
    hearth: Rc<RefCell<Hearth>>,
    stats: Rc<RefCell<Stats>>,
    /// KV budget of the target, which a draft model gets too.
    kv_memory: u64,
}

fn stats_for(h: &Hearth, load_ms: f64) -> Stats {
    let ctx = &h.model.ctx;
    let (info, caps, c) = (&ctx.info, &ctx.caps, &h.model.config);
    let pool = &h.model.pool;
    Stats {
        adapter: serde_json::json!({
            "name": info.name,
            "backend": format!("{:?}", info.backend),
            "driver": format!("{} {}", info.driver, info.driver_info).trim(),
            "device_type": format!("{:?}", info.device_type),
        }),
        features: serde_json::json!({
            "shader_f16": caps.f16,
            "tiled_f16": caps.tiled_f16,
            "subgroups": caps.subgroups,
            "subgroup_min_size": caps.subgroup_min_size,
            "subgroup_max_size": caps.subgroup_max_size,
        }),
        limits: serde_json::json!({
            "max_storage_binding": caps.max_binding,
            "max_buffer": caps.max_buffer,
            "max_workgroup_invocations": caps.max_invocations,
            "max_storage_buffers_per_stage": caps.max_storage_buffers_per_stage,
        }),
        model: serde_json::json!({
            "desc": h.source_desc,
            "arch": format!("{:?}", c.arch),
            "layers": c.num_layers,
            "hidden": c.hidden_size,
            "vocab": c.vocab_size,
            "context_length": c.max_position_embeddings,
            "weight_bytes": h.model.weight_bytes,
        }),
        kv: serde_json::json!({
            "dtype": format!("{:?}", pool.dtype()).to_lowercase(),
            "blocks": pool.num_blocks(),
            "block_size": pool.block_size(),
            "tokens": pool.num_blocks() as u64 * pool.block_size() as u64,
        }),
        load_ms,
        draft: None,
        last: None,
    }
}

/// The (Blob, name) pairs of a load call's two arrays.
fn picked_files(files: Array, names: Array) -> Result<Vec<(String, web_sys::Blob)>, JsValue> {
    if files.length() != names.length() {
        return Err(JsError::new("files and names must have the same length").into());
    }
    let mut picked = Vec::new();
    for (f, n) in files.iter().zip(names.iter()) {
        let blob: web_sys::Blob = f
            .dyn_into()
            .map_err(|_| JsError::new("every file must be a Blob or File"))?;
        let name = n
            .as_string()
            .ok_or_else(|| JsError::new("every name must be a string"))?;
        picked.push((name, blob));
    }
    Ok(picked)
}

/// Reports upload progress to JavaScript as `{phase: "upload", done, total}`.
fn progress_to(on_progress: &Function) -> impl FnMut(LoadProgress) + '_ {
    move |p: LoadProgress| {
        let obj =
            serialize(&serde_json::json!({"phase": "upload", "done": p.done, "total": p.total}));
        let _ = on_progress.call1(&JsValue::NULL, &obj);
    }
}

#[wasm_bindgen]
impl Engine {
    /// Loads one GGUF file, or a Hugging Face set of files, from Blobs.
    /// `on_progress` gets `{phase: "upload", done, total}`, counting the parts
    /// uploaded (the embedding, each layer, the output head).
    pub async fn load(
        files: Array,
        names: Array,
        options: JsValue,
        on_progress: Function,
    ) -> Result<Engine, JsValue> {
        let t0 = Instant::now();
        let opts: LoadOptions = if options.is_undefined() || options.is_null() {
            LoadOptions::default()
        } else {
            serde_wasm_bindgen::from_value(options)
                .map_err(|e| JsError::new(&format!("load options: {e}")))?
        };
        let picked = picked_files(files, names)?;
        let loaded = crate::files::open(picked).map_err(to_js)?;
        let gpu = GpuOptions {
            no_f16: opts.no_f16,
            no_subgroups: opts.no_subgroups,
            web_subgroups: opts.web_subgroups,
            ..GpuOptions::default()
        };
        let ctx = GpuContext::new(&gpu).await.map_err(to_js)?;
        let mut forward = ForwardOptions::default();
        if let Some(mib) = opts.kv_memory_mib {
            forward.kv_memory = (mib as u64) << 20;
        }
        if let Some(d) = &opts.kv_dtype {
            forward.kv_dtype = KvDtype::parse(d)
                .map_err(|e| JsError::new(&format!("load options: kv_dtype: {e}")))?;
        }
        let kv_memory = forward.kv_memory;
        let mut progress = progress_to(&on_progress);
        let h = Hearth::from_loaded(ctx.clone(), loaded, forward, &mut progress).map_err(to_js)?;
        // Errors of the upload (out of GPU memory) arrive asynchronously on the web.
        ctx.settle().await.map_err(to_js)?;
        let stats = stats_for(&h, t0.elapsed().as_secs_f64() * 1e3);
        Ok(Engine {
            hearth: Rc::new(RefCell::new(h)),
            stats: Rc::new(RefCell::new(stats)),
            kv_memory,
        })
    }

    /// Loads a draft model for speculative decoding (`draft: "model"` in
    /// `generate`) from Blobs, like `load`, onto the same device with a KV
    /// budget equal to the target's. Its tokenizer must be the target's.
    // The borrow is held across awaits on purpose, as in `generate`.
    #[allow(clippy::await_holding_refcell_ref)]
    pub async fn attach_draft(
        &self,
        files: Array,
        names: Array,
        on_progress: Function,
    ) -> Result<JsValue, JsValue> {
        let picked = picked_files(files, names)?;
        let mut h = self.hearth.try_borrow_mut().map_err(|_| busy())?;
        let loaded = crate::files::open(picked).map_err(to_js)?;
        let ctx = h.model.ctx.clone();
        let opts = h.draft_forward_options(self.kv_memory);
        let mut progress = progress_to(&on_progress);
        let draft = Hearth::from_loaded(ctx.clone(), loaded, opts, &mut progress).map_err(to_js)?;
        ctx.settle().await.map_err(to_js)?;
        let desc = serde_json::json!({
            "desc": draft.source_desc,
            "weight_bytes": draft.model.weight_bytes,
        });
        h.attach_draft(draft).map_err(to_js)?;
        self.stats.borrow_mut().draft = Some(desc);
        Ok(self.stats())
    }

    /// Prompt token ids for `[{role, content}, ...]` through the model's chat template.
    pub fn chat_prompt(&self, messages: JsValue) -> Result<Vec<u32>, JsValue> {
        #[derive(serde::Deserialize)]
        struct Msg {
            role: String,
            content: String,
        }
        let msgs: Vec<Msg> = serde_wasm_bindgen::from_value(messages)
            .map_err(|e| JsError::new(&format!("messages must be [{{role, content}}]: {e}")))?;
        let msgs = msgs
            .into_iter()
            .map(|m| ChatMessage::new(&m.role, &m.content))
            .collect();
        self.prompt(Prompt::Chat(msgs))
    }

    /// Prompt token ids for raw text (special-token markup is parsed).
    pub fn text_prompt(&self, text: String) -> Result<Vec<u32>, JsValue> {
        self.prompt(Prompt::Text(text))
    }

    fn prompt(&self, p: Prompt) -> Result<Vec<u32>, JsValue> {
        let h = self.hearth.try_borrow().map_err(|_| busy())?;
        h.prompt_ids(&p).map_err(to_js)
    }

    /// Generates from `prompt_ids`; `on_token({text, token_id})` returning
    /// `false` stops. Resolves to the result object.
    // Holding the borrow across awaits is the point: it marks the engine busy,
    // and every other access uses `try_borrow`, so nothing can panic on it.
    #[allow(clippy::await_holding_refcell_ref)]
    pub fn generate(&self, prompt_ids: Vec<u32>, options: JsValue, on_token: Function) -> Promise {
        let hearth = self.hearth.clone();
        let stats = self.stats.clone();
        future_to_promise(async move {
            let opts: GenOptions = if options.is_undefined() || options.is_null() {
                GenOptions::default()
            } else {
                serde_wasm_bindgen::from_value(options)
                    .map_err(|e| JsError::new(&format!("generate options: {e}")))?
            };
            let gen_opts = opts.to_generate();
            let mut h = hearth.try_borrow_mut().map_err(|_| busy())?;
            let t0 = Instant::now();
            let mut ttft_ms = None;
            let g: Generation = h
                .generate(&prompt_ids, &gen_opts, &mut |ev| {
                    ttft_ms.get_or_insert_with(|| t0.elapsed().as_secs_f64() * 1e3);
                    let out = serialize(&TokenOut {
                        text: ev.text,
                        token_id: ev.id,
                    });
                    // A throwing callback stops the generation like `false` does.
                    match on_token.call1(&JsValue::NULL, &out) {
                        Ok(v) => v.as_bool() != Some(false),
                        Err(_) => false,
                    }
                })
                .await
                .map_err(to_js)?;
            stats.borrow_mut().last = Some(LastRun {
                prefill_tok_s: g.prefill_tok_s(),
                decode_tok_s: g.decode_tok_s(),
                prompt_tokens: g.prompt_ids.len(),
                completion_tokens: g.ids.len(),
                spec: g.spec,
            });
            Ok(serialize(&ResultOut {
                text: &g.text,
                token_ids: &g.ids,
                prompt_tokens: g.prompt_ids.len(),
                completion_tokens: g.ids.len(),
                finish_reason: g.finish_reason,
                prefill_tok_s: g.prefill_tok_s(),
                decode_tok_s: g.decode_tok_s(),
                ttft_ms: ttft_ms.unwrap_or(0.0),
            }))
        })
    }

    /// Adapter, features, limits, model, KV cache, load time and the last run's speeds.
    pub fn stats(&self) -> JsValue {
        serialize(&*self.stats.borrow())
    }
}

fn busy() -> JsValue {
    JsError::new("the engine is busy with another generation; wait for it or stop it first").into()
}
