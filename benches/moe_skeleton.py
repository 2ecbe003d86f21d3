"""Header-only GGUF skeletons for comparing a mixture-of-experts model with
a dense model of the same active size (docs/PERFORMANCE.md, "Mixture of
experts"). Run them with `hearth bench --dummy-weights`: Hearth fills in
random weights of the declared formats, so they decode at the speed the real
files would.

    python3 benches/moe_skeleton.py TOKENIZER.gguf OUT_DIR [LAYERS]

Writes OUT_DIR/qwen3moe-30b-a3b.gguf, Qwen3-30B-A3B's shapes (hidden 2048,
32 query and 4 KV heads of 128, 128 experts of width 768, 8 per token,
renormalised), and OUT_DIR/qwen3-dense-a3b.gguf, the same model with one
dense SwiGLU of width 8 x 768 = 6144 per layer instead: the same weights read
per token (less the router's 128 x 2048). LAYERS (default 48, the real
count) can be lowered to fit a small machine; both files keep it. Matrices
are Q4_K (every row a multiple of 256 long), norms and routers F32. The
tokenizer and template come from TOKENIZER.gguf (the real vocabulary is
151936; the default model's 49152 shrinks the embedding and lm_head alike
for both). Needs gguf (pip).
"""

import os
import sys

import numpy as np
import gguf

from random_llama import copy_tokenizer

HIDDEN = 2048
HEADS = 32
KV_HEADS = 4
HEAD_DIM = 128
EXPERTS = 128
USED = 8
EXPERT_FFN = 768
Q4_K = gguf.GGMLQuantizationType.Q4_K
F32 = gguf.GGMLQuantizationType.F32


def nbytes(shape, t):
    n = int(np.prod(shape))
    return n * 4 if t == F32 else n // 256 * 144


def write(src, path, layers, moe):
    arch = "qwen3moe" if moe else "qwen3"
    w = gguf.GGUFWriter(path, arch)
    w.add_name("qwen3moe-30b-a3b-skeleton" if moe else "qwen3-dense-a3b-skeleton")
    w.add_context_length(4096)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(layers)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_key_length(HEAD_DIM)
    w.add_value_length(HEAD_DIM)
    w.add_rope_freq_base(1000000.0)
    w.add_layer_norm_rms_eps(1e-6)
    if moe:
        w.add_feed_forward_length(6144)
        w.add_expert_count(EXPERTS)
        w.add_expert_used_count(USED)
        w.add_expert_feed_forward_length(EXPERT_FFN)
    else:
        w.add_feed_forward_length(USED * EXPERT_FFN)
    vocab = copy_tokenizer(src, w)

    def t(name, shape, typ=Q4_K):
        w.add_tensor_info(name, shape, np.dtype(np.float32), nbytes(shape, typ), raw_dtype=typ)

    t("token_embd.weight", (vocab, HIDDEN))
    q, kv = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    for i in range(layers):
        b = f"blk.{i}."
        t(b + "attn_norm.weight", (HIDDEN,), F32)
        t(b + "attn_q.weight", (q, HIDDEN))
        t(b + "attn_k.weight", (kv, HIDDEN))
        t(b + "attn_v.weight", (kv, HIDDEN))
        t(b + "attn_output.weight", (HIDDEN, q))
        t(b + "attn_q_norm.weight", (HEAD_DIM,), F32)
        t(b + "attn_k_norm.weight", (HEAD_DIM,), F32)
        t(b + "ffn_norm.weight", (HIDDEN,), F32)
        if moe:
            t(b + "ffn_gate_inp.weight", (EXPERTS, HIDDEN), F32)
            t(b + "ffn_gate_exps.weight", (EXPERTS, EXPERT_FFN, HIDDEN))
            t(b + "ffn_up_exps.weight", (EXPERTS, EXPERT_FFN, HIDDEN))
            t(b + "ffn_down_exps.weight", (EXPERTS, HIDDEN, EXPERT_FFN))
        else:
            t(b + "ffn_gate.weight", (USED * EXPERT_FFN, HIDDEN))
            t(b + "ffn_up.weight", (USED * EXPERT_FFN, HIDDEN))
            t(b + "ffn_down.weight", (HIDDEN, USED * EXPERT_FFN))
    t("output_norm.weight", (HIDDEN,), F32)
    t("output.weight", (vocab, HIDDEN))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    # Pad to where the (absent) tensor data would start: GGUF's 32-byte alignment.
    with open(path, "ab") as f:
        f.write(b"\0" * (-f.tell() % 32))
    print(f"{path}: {layers} layers, vocab {vocab}")


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    src = gguf.GGUFReader(sys.argv[1])
    layers = int(sys.argv[3]) if len(sys.argv) == 4 else 48
    os.makedirs(sys.argv[2], exist_ok=True)
    write(src, os.path.join(sys.argv[2], "qwen3moe-30b-a3b.gguf"), layers, True)
    write(src, os.path.join(sys.argv[2], "qwen3-dense-a3b.gguf"), layers, False)


if __name__ == "__main__":
    main()
