"""A random-initialised Llama-shaped F16 GGUF of about 0.5B parameters, for
benchmarks at a size between the default model and the 1B class (its Q4_K_M
comes from llama.cpp's llama-quantize; see llama_cpp_compare.sh).

    python3 benches/random_llama.py TOKENIZER.gguf OUT.gguf

The tokenizer (and chat template) are copied from TOKENIZER.gguf, so both
engines can load the file; the weights are N(0, 0.02) from a fixed seed
(numpy's PCG64), so the file, and the Q4_K_M made from it, are the same on
every run. Every row length is a multiple of 256, so the K-quant types apply
to every matrix without fallbacks. Needs numpy and gguf (pip).
"""

import sys

import numpy as np
import gguf

HIDDEN = 1280
FFN = 3584
LAYERS = 22
HEADS = 20
KV_HEADS = 4
HEAD_DIM = HIDDEN // HEADS


def copy_tokenizer(src, w) -> int:
    """Copies every tokenizer.* key of reader `src` into writer `w`; returns the vocabulary size."""
    vocab = 0
    for key, field in src.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        sub = field.types[1] if vtype == gguf.GGUFValueType.ARRAY else None
        value = field.contents()
        if key == "tokenizer.ggml.tokens":
            vocab = len(value)
        w.add_key_value(key, value, vtype, sub_type=sub)
    w.add_vocab_size(vocab)
    return vocab


def main(tok_path: str, out_path: str) -> None:
    src = gguf.GGUFReader(tok_path)
    w = gguf.GGUFWriter(out_path, "llama")
    w.add_name("random-llama-0.5B")
    w.add_context_length(4096)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(FFN)
    w.add_block_count(LAYERS)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    vocab = copy_tokenizer(src, w)

    rng = np.random.default_rng(20261122)

    def mat(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16)

    ones = lambda n: np.ones(n, dtype=np.float32)
    w.add_tensor("token_embd.weight", mat(vocab, HIDDEN))
    for i in range(LAYERS):
        b = f"blk.{i}."
        w.add_tensor(b + "attn_norm.weight", ones(HIDDEN))
        w.add_tensor(b + "attn_q.weight", mat(HIDDEN, HIDDEN))
        w.add_tensor(b + "attn_k.weight", mat(KV_HEADS * HEAD_DIM, HIDDEN))
        w.add_tensor(b + "attn_v.weight", mat(KV_HEADS * HEAD_DIM, HIDDEN))
        w.add_tensor(b + "attn_output.weight", mat(HIDDEN, HIDDEN))
        w.add_tensor(b + "ffn_norm.weight", ones(HIDDEN))
        w.add_tensor(b + "ffn_gate.weight", mat(FFN, HIDDEN))
        w.add_tensor(b + "ffn_up.weight", mat(FFN, HIDDEN))
        w.add_tensor(b + "ffn_down.weight", mat(HIDDEN, FFN))
    w.add_tensor("output_norm.weight", ones(HIDDEN))
    w.add_tensor("output.weight", mat(vocab, HIDDEN))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    params = vocab * HIDDEN * 2 + LAYERS * (2 * HIDDEN * HIDDEN + 2 * KV_HEADS * HEAD_DIM * HIDDEN + 3 * HIDDEN * FFN)
    print(f"{out_path}: {params / 1e6:.0f}M parameters (vocab {vocab})")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
