#!/usr/bin/env python3
"""Golden logits from Hugging Face transformers for tiny random-initialised
models: the independent oracle for Hearth's safetensors path.

Run by hand (never in CI); see tests/golden/README.md. For every case it
writes tests/fixtures/hf/<case>/ with config.json, safetensors weights,
tokenizer.json, tokenizer_config.json and golden.json, then reloads the
directory from disk with transformers so the goldens describe exactly the
files that are committed.
"""

import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "hf"

VOCAB = 320
NEW_TOKENS = 12
TOP_K = 5
# Larger than HF's 0.02 so logits spread out and greedy ids are well separated.
INIT_STD = 0.25

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>"]

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# The BOS-adding cases use a template that reads `bos_token`, `loop.first`
# and the `trim` filter, as Llama-3-style templates do.
BOS_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if loop.first and message['role'] == 'system' %}{{ message['content'] | trim }}\n\n"
    "{% else %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] | trim + '<|im_end|>\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CHAT_MESSAGES = [
    {"role": "system", "content": "You are a tiny test model. "},
    {"role": "user", "content": "  Which ocean is the largest?"},
    {"role": "assistant", "content": "The Pacific."},
    {"role": "user", "content": "Thanks!"},
]

CORPUS = """\
The hearth is the heart of the house. Small models run on any GPU that wgpu reaches.
Once upon a time there was a tiny language model that lived in a test fixture.
It could count: one, two, three, 4, 5, 6, 7, 8, 9, 10, 100, 2024 and 3.14159.
Le café est chaud; naïve façade, déjà vu. Ünïcödé and emoji 🙂 appear sometimes.
def forward(self, x): return self.norm(x + self.attn(x)) # code is text too
Questions? What is the capital of France? Paris is the capital of France.
The quick brown fox jumps over the lazy dog while the cat sleeps by the fire.
User: hello there! Assistant: Hello, how can I help you today?
"""

PLAIN_PROMPT = "Once upon a time, the tiny model said: 123 café!"
CHAT_PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"

# Each case: architecture, config overrides, how weights and config are stored.
CASES = [
    dict(
        name="llama_f32",
        arch="llama",
        seed=11,
        dtype="float32",
        rope_style="legacy",
        bos=True,
        prompt=PLAIN_PROMPT,
        config=dict(rope_theta=10000.0),
    ),
    dict(
        name="llama3_rope_f16",
        arch="llama",
        seed=12,
        dtype="float16",
        rope_style="legacy",
        bos=True,
        prompt=PLAIN_PROMPT + " And then it went on and on.",
        config=dict(
            rope_theta=10000.0,
            max_position_embeddings=512,
            rope_scaling=dict(
                rope_type="llama3",
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=64,
            ),
        ),
    ),
    dict(
        name="llama_tied_llama3_params",
        arch="llama",
        seed=13,
        dtype="float32",
        rope_style="parameters",
        bos=True,
        prompt=CHAT_PROMPT,
        config=dict(
            tie_word_embeddings=True,
            rope_theta=500000.0,
            max_position_embeddings=256,
            rope_scaling=dict(
                rope_type="llama3",
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=64,
            ),
        ),
    ),
    dict(
        name="mistral_bf16",
        arch="mistral",
        seed=14,
        dtype="bfloat16",
        rope_style="legacy",
        bos=True,
        prompt=CHAT_PROMPT,
        config=dict(rope_theta=1000000.0, sliding_window=4096),
    ),
    dict(
        name="qwen2_bias_sharded",
        arch="qwen2",
        seed=15,
        dtype="float32",
        rope_style="parameters",
        bos=False,
        prompt=CHAT_PROMPT,
        shard="60KB",
        config=dict(rope_theta=1000000.0),
    ),
    dict(
        name="qwen3_qknorm_tied",
        arch="qwen3",
        seed=16,
        dtype="float32",
        rope_style="parameters",
        bos=False,
        prompt="<|im_start|>user\n" + PLAIN_PROMPT + "<|im_end|>\n<|im_start|>assistant\n",
        # Explicit head_dim that differs from hidden / heads (32 / 4 = 8).
        config=dict(rope_theta=1000000.0, head_dim=16, tie_word_embeddings=True),
    ),
]

ARCHS = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM),
}


def build_tokenizer(add_bos: bool) -> Tokenizer:
    """A byte-level BPE trained on CORPUS, with exactly VOCAB entries."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([CORPUS] * 4, trainer)
    if tok.get_vocab_size() != VOCAB:
        sys.exit(f"tokenizer has {tok.get_vocab_size()} entries, wanted {VOCAB}: lengthen CORPUS")
    byte_level = processors.ByteLevel(trim_offsets=False)
    if add_bos:
        bos = "<|begin_of_text|>"
        tok.post_processor = processors.Sequence(
            [
                byte_level,
                processors.TemplateProcessing(
                    single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
                ),
            ]
        )
    else:
        tok.post_processor = byte_level
    return tok


def tokenizer_config(add_bos: bool) -> dict:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|begin_of_text|>" if add_bos else None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "add_bos_token": add_bos,
        "add_eos_token": False,
        "model_max_length": 512,
        "clean_up_tokenization_spaces": False,
        "chat_template": BOS_CHAT_TEMPLATE if add_bos else CHATML_TEMPLATE,
    }


def make_config(case: dict, tok: Tokenizer):
    cfg_cls, _ = ARCHS[case["arch"]]
    kw = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        initializer_range=INIT_STD,
        tie_word_embeddings=False,
        bos_token_id=tok.token_to_id("<|begin_of_text|>") if case["bos"] else None,
        eos_token_id=tok.token_to_id("<|im_end|>"),
        pad_token_id=None,
    )
    kw.update(case["config"])
    return cfg_cls(**kw)


@torch.no_grad()
def randomise(model: torch.nn.Module, gen: torch.Generator) -> None:
    """HF initialises norms to one and biases to zero: randomise both so the
    fixtures prove that they are loaded and applied."""
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=gen))
        elif name.endswith(".bias"):
            p.copy_(0.5 * torch.randn(p.shape, generator=gen))
        else:
            p.copy_(INIT_STD * torch.randn(p.shape, generator=gen))


def legacy_rope(config_path: Path) -> None:
    """Rewrites transformers 5's `rope_parameters` as `rope_theta` + `rope_scaling`
    (the style most published configs use); same semantics."""
    cfg = json.loads(config_path.read_text())
    rp = cfg.pop("rope_parameters", None)
    if rp is None:
        return
    rp = dict(rp)
    cfg["rope_theta"] = rp.pop("rope_theta")
    if rp.get("rope_type", "default") != "default":
        cfg["rope_scaling"] = rp
    config_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def sig6(x: float) -> float:
    return float(f"{x:.6g}")


def make_case(case: dict) -> dict:
    name = case["name"]
    out = OUT / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    tok = build_tokenizer(case["bos"])
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(case["bos"]), indent=2) + "\n")

    torch.manual_seed(case["seed"])
    gen = torch.Generator().manual_seed(case["seed"])
    config = make_config(case, tok)
    _, model_cls = ARCHS[case["arch"]]
    model = model_cls(config).float().eval()
    randomise(model, gen)
    model.tie_weights()
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.bos_token_id = config.bos_token_id

    dtype = getattr(torch, case["dtype"])
    save_kw = {"max_shard_size": case["shard"]} if "shard" in case else {}
    model.to(dtype).save_pretrained(out, safe_serialization=True, **save_kw)
    cfg_json = json.loads((out / "config.json").read_text())
    if case["rope_style"] == "legacy":
        legacy_rope(out / "config.json")
    elif "rope_parameters" not in cfg_json:
        sys.exit(f"{name}: transformers {transformers.__version__} did not write rope_parameters")

    # Everything below reads the files back, in f32 compute.
    hf_tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    prompt = case["prompt"]
    ids = hf_tok(prompt, add_special_tokens=True)["input_ids"]
    ids_plain = hf_tok(prompt, add_special_tokens=False)["input_ids"]
    raw = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert raw.encode(prompt, add_special_tokens=True).ids == ids, f"{name}: AutoTokenizer != tokenizers"
    assert raw.encode(prompt, add_special_tokens=False).ids == ids_plain
    assert hf_tok.decode(ids_plain) == prompt, f"{name}: tokenizer does not round-trip"

    chat_text = hf_tok.apply_chat_template(CHAT_MESSAGES, tokenize=False, add_generation_prompt=True)
    # apply_chat_template(tokenize=True) does not add special tokens again.
    chat_ids = hf_tok(chat_text, add_special_tokens=False)["input_ids"]

    x = torch.tensor([ids])
    with torch.no_grad():
        logits = model(x).logits[0].float()  # [n, vocab]
    top = torch.topk(logits, TOP_K + 1, dim=-1)
    # The smallest gap between neighbours among the top K+1 at any position:
    # a comparison at tolerance `tol` is only meaningful when this exceeds it.
    top_gap = float((top.values[:, :-1] - top.values[:, 1:]).min())

    # Greedy generation with EOS stopping off, so exactly NEW_TOKENS come out
    # and no logits processor touches the scores.
    gen_out = model.generate(
        x,
        attention_mask=torch.ones_like(x),
        do_sample=False,
        max_new_tokens=NEW_TOKENS,
        eos_token_id=None,
        pad_token_id=0,
        return_dict_in_generate=True,
        output_scores=True,
    )
    greedy = gen_out.sequences[0, len(ids) :].tolist()
    assert len(greedy) == NEW_TOKENS, f"{name}: generate stopped early"
    margins = []
    for s in gen_out.scores:
        v = torch.topk(s[0].float(), 2).values
        margins.append(float(v[0] - v[1]))
    # Cross-check generate against a plain full-sequence argmax loop.
    seq = list(ids)
    with torch.no_grad():
        for _ in range(NEW_TOKENS):
            seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    assert seq[len(ids) :] == greedy, f"{name}: generate != argmax loop"

    rope_effect = None
    if config.rope_parameters and config.rope_parameters.get("rope_type", "default") != "default":
        # How much the scaling changes the logits: proves the case tests it.
        plain_cfg = model.config.__class__.from_dict(model.config.to_dict())
        plain_cfg.rope_parameters = {"rope_type": "default", "rope_theta": config.rope_parameters["rope_theta"]}
        plain = model.__class__(plain_cfg).eval()
        plain.load_state_dict(model.state_dict())
        with torch.no_grad():
            rope_effect = float((plain(x).logits[0, -1] - logits[-1]).abs().max())

    golden = {
        "case": name,
        "architecture": case["arch"],
        "storage_dtype": case["dtype"],
        "config_style": "rope_theta+rope_scaling" if case["rope_style"] == "legacy" else "rope_parameters",
        "sharded": "shard" in case,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "prompt": prompt,
        "prompt_ids": ids,
        "prompt_ids_no_special": ids_plain,
        "chat_messages": CHAT_MESSAGES,
        "chat_text": chat_text,
        "chat_ids": chat_ids,
        "vocab_size": VOCAB,
        "last_logits": [sig6(v) for v in logits[-1].tolist()],
        "logit_scale": sig6(float(logits.abs().max())),
        "top_k": TOP_K,
        "top_ids": top.indices[:, :TOP_K].tolist(),
        "top_logits": [[sig6(v) for v in row] for row in top.values[:, :TOP_K].tolist()],
        # The (K+1)-th logit per position: an upper bound on every id outside the top K.
        "top_next_logits": [sig6(v) for v in top.values[:, TOP_K].tolist()],
        "top_min_gap": sig6(top_gap),
        "greedy_ids": greedy,
        "greedy_min_margin": sig6(min(margins)),
        "rope_scaling_effect": None if rope_effect is None else sig6(rope_effect),
    }
    # One key per line, values compact: small diffs when regenerated.
    body = ",\n".join(f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in golden.items())
    (out / "golden.json").write_text("{\n" + body + "\n}\n")
    size = sum(f.stat().st_size for f in out.iterdir())
    print(
        f"{name:28} n={len(ids):2} scale={golden['logit_scale']:.3g} top_gap={top_gap:.2e} "
        f"greedy_margin={min(margins):.2e} rope_effect={rope_effect} size={size / 1024:.0f}KiB "
        f"files={sorted(p.name for p in out.iterdir())}"
    )
    return golden


def main() -> None:
    torch.set_num_threads(1)
    only = set(sys.argv[1:])
    for case in CASES:
        if not only or case["name"] in only:
            make_case(case)
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"total fixture size: {total / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
