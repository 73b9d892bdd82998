"""Tiny randomly initialised causal LMs (DeepSeek-V3 MoE, Qwen2 = R1-Distill's architecture) with a
byte-level BPE tokenizer trained here with `tokenizers`: real transformers code paths, no download."""

from __future__ import annotations

from pathlib import Path

# R1-Distill style: the generation prompt opens the reasoning block, so output starts inside <think>.
R1_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}"
    "{% elif m['role'] == 'user' %}<|User|>{{ m['content'] }}"
    "{% elif m['role'] == 'assistant' %}<|Assistant|>{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|Assistant|><think>\n{% endif %}"
)
# Qwen2-instruct style (no reasoning block).
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<|bos|>", "<|eos|>", "<|pad|>", "<|User|>", "<|Assistant|>", "<|im_start|>", "<|im_end|>"]


def train_tokenizer(texts: list[str], template: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>",
                                   pad_token="<|pad|>")
    fast.add_tokens(["<think>", "</think>"])  # ordinary (not special) tokens: they survive decoding
    fast.chat_template = template
    return fast


def corpus() -> list[str]:
    root = Path(__file__).resolve().parents[1]
    texts = [p.read_text(encoding="utf-8", errors="ignore") for p in (root / "sample_docs").glob("*.md")]
    return texts + ["Debian 是一个自由的操作系统。根据以下上下文回答：问题：来源 第 页", "Answer from the contexts [1] [2] [3]."]


def build_qwen2(dst: Path) -> Path:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = train_tokenizer(corpus(), CHATML_TEMPLATE)
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=True)
    Qwen2ForCausalLM(cfg).save_pretrained(dst)
    tok.save_pretrained(dst)
    return dst


def build_deepseek_v3(dst: Path) -> Path:
    import torch
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    tok = train_tokenizer(corpus(), R1_TEMPLATE)
    torch.manual_seed(0)
    cfg = DeepseekV3Config(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
        num_hidden_layers=2, first_k_dense_replace=1, n_routed_experts=4, num_experts_per_tok=2,
        n_shared_experts=1, n_group=1, topk_group=1, num_attention_heads=4, num_key_value_heads=4,
        q_lora_rank=None, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16,
        max_position_embeddings=4096, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, rope_scaling=None)
    DeepseekV3ForCausalLM(cfg).save_pretrained(dst)
    tok.save_pretrained(dst)
    return dst
