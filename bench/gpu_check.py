"""GPU check: faiss-gpu search, the embedder on CUDA, and the transformers generator on a model with
the exact shape of DeepSeek-R1-Distill-Qwen-7B (random bf16 weights: the real ones cannot be
downloaded here), timed for a 2,000-token RAG prompt and 256 new tokens, beside the memory-bandwidth
limit of decoding. Saves bench/results/gpu_check.json.

    python bench/gpu_check.py            # on a CUDA machine
    python bench/gpu_check.py --small    # tiny shapes, runs anywhere (a smoke test of this script)
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# DeepSeek-R1-Distill-Qwen-7B's config.json (architecture Qwen2ForCausalLM).
R1_DISTILL_QWEN_7B = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                          num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=131072,
                          rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=False,
                          bos_token_id=151646, eos_token_id=151643)
SMALL = dict(R1_DISTILL_QWEN_7B, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, vocab_size=1024, bos_token_id=1, eos_token_id=2)


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def memory_bandwidth_gbs(device: str) -> float:
    """Measured copy bandwidth (read + write bytes per second) of a large tensor."""
    import torch

    n = (1 << 28) if device == "cuda" else (1 << 24)  # 1 GiB / 64 MiB of float32
    a = torch.empty(n, dtype=torch.float32, device=device)
    b = torch.empty_like(a)
    b.copy_(a)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(10):
        b.copy_(a)
    sync(device)
    return 2 * a.numel() * 4 * 10 / (time.perf_counter() - t0) / 1e9


def check_faiss(small: bool) -> dict:
    import faiss

    from kb.device import faiss_gpu_count

    n, d, nq, k = (20_000, 384, 100, 10) if small else (1_000_000, 384, 1_000, 10)
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((n, d), dtype=np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    xq = xb[rng.choice(n, nq, replace=False)]
    cpu = faiss.IndexFlatIP(d)
    cpu.add(xb)
    out = {"vectors": n, "dim": d, "queries": nq, "faiss_gpus": faiss_gpu_count()}
    t0 = time.perf_counter()
    _, ids_cpu = cpu.search(xq, k)
    out["cpu_qps"] = round(nq / (time.perf_counter() - t0), 1)
    if out["faiss_gpus"] > 0:  # only then: faiss-gpu on a CPU machine returns an empty index silently
        gpu = faiss.index_cpu_to_all_gpus(cpu)
        gpu.search(xq[:10], k)  # warm-up
        t0 = time.perf_counter()
        _, ids_gpu = gpu.search(xq, k)
        out["gpu_qps"] = round(nq / (time.perf_counter() - t0), 1)
        out["gpu_agrees_with_cpu_top1"] = float((ids_gpu[:, 0] == ids_cpu[:, 0]).mean())
        out["gpu_index_count"] = int(gpu.ntotal)
    return out


def check_embedder(device: str, small: bool) -> dict:
    from kb.embeddings import make_embedder
    from kb.settings import EmbeddingSettings

    emb = make_embedder(EmbeddingSettings(model="all-MiniLM-L6-v2", device=device, batch_size=256))
    texts = [f"Debian package {i}: how to install, configure and upgrade it with apt and dpkg. " * 6
             for i in range(256 if small else 8192)]
    emb.embed_passages(texts[:64])
    sync(device)
    t0 = time.perf_counter()
    vecs = emb.embed_passages(texts)
    sync(device)
    return {"model": emb.name, "device": str(emb.device), "texts": len(texts),
            "chunks_per_s": round(len(texts) / (time.perf_counter() - t0), 1), "dim": int(vecs.shape[1])}


def check_generator(device: str, small: bool, prompt_tokens: int, new_tokens: int, bandwidth: float) -> dict:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from kb.settings import GeneratorSettings
    from retrieval.generators import TransformersGenerator
    from retrieval.prompt import build_prompt
    from retrieval.types import Context
    from tests.tiny_models import CHATML_TEMPLATE, corpus, train_tokenizer

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    cfg = Qwen2Config(**(SMALL if small else R1_DISTILL_QWEN_7B))
    t0 = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(device):
        torch.set_default_dtype(dtype)
        model = Qwen2ForCausalLM(cfg).eval()
        torch.set_default_dtype(torch.float32)
    sync(device)
    build_s = time.perf_counter() - t0
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    out = {"shape": "DeepSeek-R1-Distill-Qwen-7B" if not small else "small", "dtype": str(dtype),
           "params_b": round(sum(p.numel() for p in model.parameters()) / 1e9, 3),
           "weight_gb": round(weight_bytes / 1e9, 2), "build_s": round(build_s, 1),
           "attn_implementation": model.config._attn_implementation}

    # Prefill: one forward pass over a 2,000-token prompt.
    ids = torch.randint(10, cfg.vocab_size - 10, (1, prompt_tokens), device=device)
    with torch.no_grad():
        model(ids)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        model(ids)
        sync(device)
        prefill = time.perf_counter() - t0
        # Decode: 256 new tokens after the prompt (eos ignored so the length is exact).
        t0 = time.perf_counter()
        gen = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                             pad_token_id=cfg.eos_token_id)
        sync(device)
        total = time.perf_counter() - t0
    made = gen.shape[1] - prompt_tokens
    decode_s = max(total - prefill, 1e-9)
    out.update(prompt_tokens=prompt_tokens, new_tokens=int(made),
               prefill_tokens_per_s=round(prompt_tokens / prefill, 1),
               decode_tokens_per_s=round(made / decode_s, 1),
               decode_bound_tokens_per_s=round(bandwidth * 1e9 / weight_bytes, 1),
               peak_memory_gb=round(torch.cuda.max_memory_allocated() / 1e9, 2) if device == "cuda" else None)
    out["decode_share_of_bound"] = round(out["decode_tokens_per_s"] / out["decode_bound_tokens_per_s"], 3)

    # kb's own streaming path (chat template, TextIteratorStreamer) on this model.
    tok = train_tokenizer(corpus(), CHATML_TEMPLATE)
    g = TransformersGenerator(GeneratorSettings(model="in-memory", temperature=0.7, max_new_tokens=32), device=device)
    g._tok, g._lm = tok, model
    ctx = [Context(i, 1.0, "Debian 软件包由维护者打包。" * 60, i, None, f"/d/doc{i}.pdf", i) for i in range(1, 4)]
    usage: dict = {}
    t0 = time.perf_counter()
    pieces = list(g.stream(build_prompt("Debian 软件包是如何维护的？", ctx), usage))
    out["kb_stream"] = {"pieces": len(pieces), "prompt_tokens": usage.get("prompt_tokens"),
                        "completion_tokens": usage.get("completion_tokens"), "seconds": round(time.perf_counter() - t0, 2)}
    del model
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", action="store_true", help="tiny shapes on any device (smoke test)")
    ap.add_argument("--prompt-tokens", type=int, default=2000)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu_check.json")
    args = ap.parse_args()
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.small:
        print("gpu_check: no CUDA device; run with --small for a CPU smoke test", file=sys.stderr)
        return 2
    report = {"machine": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
              "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu"}
    report["memory_bandwidth_gbs"] = round(memory_bandwidth_gbs(device), 1)
    print(f"device {report['device']}, measured copy bandwidth {report['memory_bandwidth_gbs']} GB/s", flush=True)
    for name, fn in (("faiss", lambda: check_faiss(args.small)),
                     ("embedder", lambda: check_embedder(device, args.small)),
                     ("generator", lambda: check_generator(device, args.small, args.prompt_tokens, args.new_tokens,
                                                           report["memory_bandwidth_gbs"]))):
        t0 = time.perf_counter()
        try:
            report[name] = fn()
        except Exception as exc:  # noqa: BLE001 - one failed check must not hide the others
            report[name] = {"error": f"{type(exc).__name__}: {exc}"}
        report[name]["check_s"] = round(time.perf_counter() - t0, 1)
        print(f"{name}: {json.dumps(report[name])}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    g = report.get("generator", {})
    if "decode_tokens_per_s" in g:
        print(f"\n| shape | prefill tok/s ({g['prompt_tokens']} tokens) | decode tok/s ({g['new_tokens']} new) | "
              f"bandwidth bound tok/s | share |\n|---|---|---|---|---|\n| {g['shape']} {g['dtype']} | "
              f"{g['prefill_tokens_per_s']} | {g['decode_tokens_per_s']} | {g['decode_bound_tokens_per_s']} | "
              f"{g['decode_share_of_bound']} |")
    return 1 if any("error" in report[k] for k in ("faiss", "embedder", "generator")) else 0


if __name__ == "__main__":
    sys.exit(main())
