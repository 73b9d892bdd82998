"""The bundled all-MiniLM-L6-v2 run with torch alone (a BERT encoder, mean pooling, L2 norm).

Why not sentence-transformers: importing it (it imports transformers) takes ~6 s per process here, this
module ~1 s; every `kb ask` and `kb search` in English pays that once the English ranking is on. Its
vectors equal sentence-transformers' to a cosine of 0.9999999 (tests/kb/test_minilm.py), so both share
one name in the embedding cache and in index manifests.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


class MiniLM:
    def __init__(self, folder: Path, device: str = "cpu"):
        import torch
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        cfg = json.loads((folder / "config.json").read_text())
        self.heads, self.layers, self.eps = cfg["num_attention_heads"], cfg["num_hidden_layers"], cfg["layer_norm_eps"]
        self.max_length = json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"]
        self.dim = cfg["hidden_size"]
        self.device = torch.device(device)
        self.w = {k: v.to(self.device) for k, v in load_file(str(folder / "model.safetensors")).items()}
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()

    def token_count(self, text: str) -> int:
        """Content tokens, without [CLS] and [SEP]."""
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def encode(self, texts: list[str]) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        encodings = self.tokenizer.encode_batch(texts)
        ids = [e.ids[: self.max_length - 1] + e.ids[-1:] if len(e.ids) > self.max_length else e.ids for e in encodings]
        n = max(len(i) for i in ids)
        tokens = torch.zeros((len(ids), n), dtype=torch.long)
        mask = torch.zeros((len(ids), n), dtype=torch.bool)
        for row, i in enumerate(ids):
            tokens[row, : len(i)] = torch.tensor(i)
            mask[row, : len(i)] = True
        tokens, mask, w = tokens.to(self.device), mask.to(self.device), self.w

        def norm(x, name: str):  # noqa: ANN001, ANN202 - tensors
            return F.layer_norm(x, x.shape[-1:], w[f"{name}.weight"], w[f"{name}.bias"], self.eps)

        with torch.inference_mode():
            x = (w["embeddings.word_embeddings.weight"][tokens] + w["embeddings.position_embeddings.weight"][:n]
                 + w["embeddings.token_type_embeddings.weight"][0])
            x = norm(x, "embeddings.LayerNorm")
            batch, attend = tokens.shape[0], mask[:, None, None, :]
            for layer in range(self.layers):
                p = f"encoder.layer.{layer}."

                def linear(x, name: str):  # noqa: ANN001, ANN202 - tensors
                    return F.linear(x, w[f"{p}{name}.weight"], w[f"{p}{name}.bias"])

                q, k, v = (linear(x, f"attention.self.{m}").view(batch, n, self.heads, -1).transpose(1, 2)
                           for m in ("query", "key", "value"))
                context = F.scaled_dot_product_attention(q, k, v, attn_mask=attend)
                context = context.transpose(1, 2).reshape(batch, n, -1)
                x = norm(x + linear(context, "attention.output.dense"), p + "attention.output.LayerNorm")
                x = norm(x + linear(F.gelu(linear(x, "intermediate.dense")), "output.dense"), p + "output.LayerNorm")
            m = mask.unsqueeze(-1).to(x.dtype)
            pooled = (x * m).sum(1) / m.sum(1)
            return F.normalize(pooled, dim=-1).float().cpu().numpy()
