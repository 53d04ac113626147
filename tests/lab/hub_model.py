# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Write a small, deterministic model repository for the hub stand-in (tests/lab/hub_standin.py).

    python3 tests/lab/hub_model.py --root DIR [--repo-id ORG/NAME] [--seed S]   writes DIR/ORG/NAME

A tiny Qwen2-style causal LM as the hub holds one: ``config.json``, ``generation_config.json``,
``tokenizer.json`` (a byte-level BPE with no merges), ``tokenizer_config.json`` and
``model.safetensors`` (about 3 MB of bf16) in the safetensors layout: 8-byte little-endian header
length, a JSON header (``dtype``, ``shape``, ``data_offsets`` per tensor, ``__metadata__``) padded
with spaces to 8 bytes, then the data. Same seed, same bytes. Not a model anyone can run usefully:
the weights are small pseudo-random numbers, enough to look real to loaders that read the header.
Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import sys
from pathlib import Path

REPO_ID = "dgxspark-lab/tiny-qwen2"
HIDDEN = 128
LAYERS = 2
HEADS = 4
KV_HEADS = 2
HEAD_DIM = HIDDEN // HEADS
INTERMEDIATE = 384
VOCAB = 8192
SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
BOS_ID = EOS_ID = VOCAB - len(SPECIAL)      # <|endoftext|>
IM_END_ID = VOCAB - 1
BF16_ONE = b"\x80\x3f"


def config():
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": BOS_ID,
        "eos_token_id": IM_END_ID,
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "initializer_range": 0.02,
        "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": 4096,
        "max_window_layers": LAYERS,
        "model_type": "qwen2",
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "num_key_value_heads": KV_HEADS,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.45.2",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": VOCAB,
    }


def generation_config():
    return {"bos_token_id": BOS_ID, "do_sample": True, "eos_token_id": [IM_END_ID, EOS_ID],
            "pad_token_id": EOS_ID, "temperature": 0.7, "top_p": 0.8, "top_k": 20,
            "repetition_penalty": 1.05, "transformers_version": "4.45.2"}


def byte_tokens():
    """GPT-2's printable stand-ins for the 256 bytes, the base of a byte-level BPE vocabulary."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    mapping, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return [mapping[b] for b in range(256)]


def tokenizer():
    vocab = {tok: i for i, tok in enumerate(byte_tokens())}
    for i in range(len(vocab), BOS_ID):          # filler pieces up to the special tokens
        vocab["<|reserved_%d|>" % i] = i
    added = [{"id": BOS_ID + n, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for n, tok in enumerate(SPECIAL)]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": True},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": []},
    }


def tokenizer_config():
    decoder = {str(BOS_ID + n): {"content": tok, "lstrip": False, "normalized": False, "rstrip": False,
                                 "single_word": False, "special": True} for n, tok in enumerate(SPECIAL)}
    return {
        "add_prefix_space": False, "added_tokens_decoder": decoder,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"], "bos_token": None,
        "chat_template": ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
                          "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
                          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"),
        "clean_up_tokenization_spaces": False, "eos_token": "<|im_end|>", "errors": "replace",
        "model_max_length": 4096, "pad_token": "<|endoftext|>", "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer", "unk_token": None,
    }


def tensor_shapes():
    """Name -> shape of every weight of the config above (Qwen2: biases on q, k, v; tied lm_head)."""
    shapes = {"model.embed_tokens.weight": [VOCAB, HIDDEN], "model.norm.weight": [HIDDEN]}
    kv = KV_HEADS * HEAD_DIM
    for layer in range(LAYERS):
        pre = "model.layers.%d." % layer
        shapes.update({
            pre + "input_layernorm.weight": [HIDDEN],
            pre + "post_attention_layernorm.weight": [HIDDEN],
            pre + "self_attn.q_proj.weight": [HIDDEN, HIDDEN], pre + "self_attn.q_proj.bias": [HIDDEN],
            pre + "self_attn.k_proj.weight": [kv, HIDDEN], pre + "self_attn.k_proj.bias": [kv],
            pre + "self_attn.v_proj.weight": [kv, HIDDEN], pre + "self_attn.v_proj.bias": [kv],
            pre + "self_attn.o_proj.weight": [HIDDEN, HIDDEN],
            pre + "mlp.gate_proj.weight": [INTERMEDIATE, HIDDEN],
            pre + "mlp.up_proj.weight": [INTERMEDIATE, HIDDEN],
            pre + "mlp.down_proj.weight": [HIDDEN, INTERMEDIATE],
        })
    return shapes


def bf16_noise(name, count, seed):
    """``count`` small bf16 values (|x| < 2**-5), from a hash of seed and name: finite, deterministic."""
    data = bytearray(hashlib.shake_256(("%s:%s" % (seed, name)).encode()).digest(2 * count))
    # High byte = sign and the top 7 exponent bits: keep the sign, pin the exponent to 2**-7 .. 2**-6.
    data[1::2] = bytes((b & 0x80) | 0x3C for b in data[1::2])
    return bytes(data)


def safetensors(seed):
    """The bytes of model.safetensors: header length, JSON header, tensor data."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, shape in sorted(tensor_shapes().items()):
        count = 1
        for dim in shape:
            count *= dim
        blob = BF16_ONE * count if name.endswith("norm.weight") else bf16_noise(name, count, seed)
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def write_model(repo_dir, seed=0):
    """Write the repository into ``repo_dir``; return {filename: bytes written}."""
    repo_dir = Path(repo_dir)
    repo_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "config.json": json.dumps(config(), indent=2) + "\n",
        "generation_config.json": json.dumps(generation_config(), indent=2) + "\n",
        "tokenizer.json": json.dumps(tokenizer(), ensure_ascii=False, indent=2) + "\n",
        "tokenizer_config.json": json.dumps(tokenizer_config(), indent=2) + "\n",
    }
    written = {}
    for name, text in files.items():
        written[name] = (repo_dir / name).write_bytes(text.encode("utf-8"))
    written["model.safetensors"] = (repo_dir / "model.safetensors").write_bytes(safetensors(seed))
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--root", required=True, help="the hub stand-in's --root")
    parser.add_argument("--repo-id", default=REPO_ID)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    written = write_model(Path(args.root) / args.repo_id, args.seed)
    for name, size in sorted(written.items()):
        print("%10d  %s/%s" % (size, args.repo_id, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
