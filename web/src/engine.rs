//! The engine object JavaScript holds: load, prompt, generate (several at
//! once), stats.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use hearth::gpu::{GpuContext, GpuOptions};
use hearth::kv::KvDtype;
use hearth::model::forward::{ForwardOptions, LoadProgress};
use hearth::structured::tools::{prepare_request, ToolChoice, ToolFormat};
use hearth::text::chat::{ChatMessage, ChatTemplate};
use hearth::text::Tokenizer;
use hearth::{EngineHandle, Hearth, HearthError, Prompt};
use js_sys::{Array, Function, Promise};
use serde::Serialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;
use web_time::Instant;

use crate::options::{GenOptions, LoadOptions};

pub(crate) fn to_js(e: HearthError) -> JsValue {
    JsError::new(&e.to_string()).into()
}

pub(crate) fn serialize<T: Serialize>(v: &T) -> JsValue {
    // Maps come out as plain objects, u64 as numbers: what a page expects.
    let ser = serde_wasm_bindgen::Serializer::json_compatible();
    v.serialize(&ser).unwrap_or(JsValue::NULL)
}

#[derive(Clone, Serialize)]
pub(crate) struct LastRun {
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Drafted and accepted tokens (speculative decoding).
    pub spec: hearth::engine::SpecStats,
}

/// What `stats()` returns; fixed at load time except `last`.
#[derive(Clone, Serialize)]
pub(crate) struct Stats {
    adapter: serde_json::Value,
    features: serde_json::Value,
    limits: serde_json::Value,
    model: serde_json::Value,
    kv: serde_json::Value,
    load_ms: f64,
    /// The attached draft model (`attach_draft`), if any.
    draft: Option<serde_json::Value>,
    pub last: Option<LastRun>,
}

#[wasm_bindgen]
pub struct Engine {
    /// The library engine runs in a driver future on this worker's event
    /// loop (`spawn_local`); every call below goes through its handle, so
    /// several generations run at once, batched by the scheduler.
    handle: EngineHandle,
    /// Copies for turning prompts into ids without a trip through the driver.
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    ctx: Arc<GpuContext>,
    /// Load options of a draft model of this one (`attach_draft`).
    draft_options: ForwardOptions,
    stats: Rc<RefCell<Stats>>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Ends the driver (after aborting what runs), which frees the GPU buffers.
        self.handle.shutdown();
    }
}

fn stats_for(h: &Hearth, load_ms: f64) -> Stats {
    let ctx = &h.model.ctx;
    let (info, caps, c) = (&ctx.info, &ctx.caps, &h.model.config);
    let pool = h.kv_pool();
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
        let draft_options = h.draft_forward_options(kv_memory);
        let (tokenizer, template) = (h.tokenizer.clone(), h.template.clone());
        let (handle, driver) = h.into_driver();
        wasm_bindgen_futures::spawn_local(driver);
        Ok(Engine {
            handle,
            tokenizer,
            template,
            ctx,
            draft_options,
            stats: Rc::new(RefCell::new(stats)),
        })
    }

    /// Loads a draft model for speculative decoding (`draft: "model"` in
    /// `generate`) from Blobs, like `load`, onto the same device with a KV
    /// budget equal to the target's. Its tokenizer must be the target's; no
    /// generation may run meanwhile.
    pub async fn attach_draft(
        &self,
        files: Array,
        names: Array,
        on_progress: Function,
    ) -> Result<JsValue, JsValue> {
        let picked = picked_files(files, names)?;
        let loaded = crate::files::open(picked).map_err(to_js)?;
        let mut progress = progress_to(&on_progress);
        let draft = Hearth::from_loaded(
            self.ctx.clone(),
            loaded,
            self.draft_options.clone(),
            &mut progress,
        )
        .map_err(to_js)?;
        self.ctx.settle().await.map_err(to_js)?;
        let desc = serde_json::json!({
            "desc": draft.source_desc,
            "weight_bytes": draft.model.weight_bytes,
        });
        self.handle.attach_draft(draft).await.map_err(to_js)?;
        self.stats.borrow_mut().draft = Some(desc);
        Ok(self.stats())
    }

    /// Prompt token ids for raw text (special-token markup is parsed).
    pub fn text_prompt(&self, text: String) -> Result<Vec<u32>, JsValue> {
        self.prompt(Prompt::Text(text))
    }

    fn prompt(&self, p: Prompt) -> Result<Vec<u32>, JsValue> {
        hearth::api::encode_prompt(&self.tokenizer, self.template.as_ref(), &p).map_err(to_js)
    }

    /// Generates from `prompt_ids`; `on_token({text, token_id})` returning
    /// `false` stops. Resolves to the result object. Calls may overlap: the
    /// engine batches them.
    pub fn generate(&self, prompt_ids: Vec<u32>, options: JsValue, on_token: Function) -> Promise {
        self.start(Prompt::Ids(prompt_ids), options, on_token)
    }

    /// Generates the reply to chat `messages` (`[{role, content, tool_calls?,
    /// tool_call_id?, name?}]`, OpenAI's shapes) through the model's
    /// template, with the options' `tools`: as [`Self::generate`], and the
    /// result carries the calls the reply made (`tool_calls`).
    pub fn generate_chat(
        &self,
        messages: JsValue,
        options: JsValue,
        on_token: Function,
    ) -> Promise {
        let msgs: Result<Vec<ChatMessage>, JsValue> = serde_wasm_bindgen::from_value(messages)
            .map_err(|e| {
                JsError::new(&format!("messages must be [{{role, content}}]: {e}")).into()
            });
        match msgs {
            Ok(m) => self.start(Prompt::Chat(m), options, on_token),
            Err(e) => Promise::reject(&e),
        }
    }

    fn start(&self, prompt: Prompt, options: JsValue, on_token: Function) -> Promise {
        let prepared = (|| -> Result<_, JsValue> {
            let opts: GenOptions = if options.is_undefined() || options.is_null() {
                GenOptions::default()
            } else {
                serde_wasm_bindgen::from_value(options)
                    .map_err(|e| JsError::new(&format!("generate options: {e}")))?
            };
            let mut req = opts.to_request(prompt).map_err(to_js)?;
            let calls = (!req.tools.is_empty() && req.tool_choice != ToolChoice::None).then(|| {
                self.template
                    .as_ref()
                    .map_or(ToolFormat::Generic, ChatTemplate::tool_format)
            });
            // The chat rendered with its tools, a forced call's grammar set.
            let ids = prepare_request(&mut req, &self.tokenizer, self.template.as_ref(), None)
                .map_err(to_js)?;
            Ok((req, ids, calls))
        })();
        let (req, ids, calls) = match prepared {
            Ok(p) => p,
            Err(e) => return Promise::reject(&e),
        };
        let handle = self.handle.clone();
        let stats = self.stats.clone();
        future_to_promise(crate::generate::run(
            handle, stats, req, ids, calls, on_token,
        ))
    }

    /// Adapter, features, limits, model, KV cache, load time and the last run's speeds.
    pub fn stats(&self) -> JsValue {
        serialize(&*self.stats.borrow())
    }
}
