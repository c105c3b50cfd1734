"""Build a tiny random-weight LLaMA (2.4 MB) that vLLM's CPU build can serve; no download.

Run with the e2e venv's python (it needs ``transformers`` and ``tokenizers``, which vLLM brings):
``python tests/integrations/tiny_llama.py OUT_DIR``. Hidden 128, 4 heads (head size 32, one the CPU
attention backend accepts), 2 layers, a byte-level BPE vocabulary of about 1000 trained on a few
sentences, and a chat template so /v1/chat/completions works.
"""

from __future__ import annotations

import sys
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Carbon accounting for language model serving measures energy per request.",
    "A sidecar receives one event per engine step and attributes energy to requests.",
    "Chunked prefill splits a long prompt over several engine steps.",
    "Decode steps generate one token per running request.",
    "Power usage effectiveness and carbon intensity turn energy into grams of CO2.",
    "Hello world, this is a tiny random model used only for tests.",
    "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?-'\"()[]{}<>/",
]


def build(out_dir: str | Path, vocab_size: int = 1000, seed: int = 0, hidden_size: int = 128,
          num_layers: int = 2, arch: str = "llama") -> Path:
    """The model in ``out_dir``; ``hidden_size`` (a multiple of 32: heads of size 32) and ``num_layers``
    make a larger one whose steps take real compute (benchmarks/hook_overhead.py's step-bound server).
    ``arch="mixtral"`` or ``"qwen3_moe"``: a mixture-of-experts model of the same size, 4 experts of
    which 2 are active per token (intermediate ``hidden_size`` per expert)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<s>", "</s>", "<unk>", "<pad>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)

    torch.manual_seed(seed)
    if arch != "llama":
        return _build_moe(out, fast, arch, hidden_size, num_layers)
    cfg = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=hidden_size // 32,
        num_key_value_heads=hidden_size // 32,
        max_position_embeddings=512,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(out, safe_serialization=True)
    return out


def _build_moe(out: Path, fast, arch: str, hidden_size: int, num_layers: int) -> Path:
    common = dict(vocab_size=len(fast), hidden_size=hidden_size, num_hidden_layers=num_layers,
                  num_attention_heads=hidden_size // 32, num_key_value_heads=hidden_size // 64 or 1,
                  max_position_embeddings=512, num_experts_per_tok=2, bos_token_id=fast.bos_token_id,
                  eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id, torch_dtype="float32")
    if arch == "mixtral":
        from transformers import MixtralConfig, MixtralForCausalLM

        model = MixtralForCausalLM(MixtralConfig(intermediate_size=hidden_size, num_local_experts=4, **common))
    elif arch == "qwen3_moe":
        from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

        model = Qwen3MoeForCausalLM(Qwen3MoeConfig(intermediate_size=2 * hidden_size, moe_intermediate_size=hidden_size,
                                                   num_experts=4, head_dim=32, **common))
    else:
        raise ValueError(f"unknown arch {arch!r}: llama, mixtral, qwen3_moe")
    model.save_pretrained(out, safe_serialization=True)
    return out


if __name__ == "__main__":
    # OUT_DIR [HIDDEN_SIZE NUM_LAYERS [ARCH]]
    print(build(sys.argv[1], **({"hidden_size": int(sys.argv[2]), "num_layers": int(sys.argv[3])}
                              if len(sys.argv) > 3 else {}), **({"arch": sys.argv[4]} if len(sys.argv) > 4 else {})))
