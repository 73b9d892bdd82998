"""GPU detection in one place: the torch device for models and whether FAISS can use GPUs."""

import glob
from functools import lru_cache


@lru_cache(maxsize=1)
def torch_device(preference: str = "auto") -> str:
    """'cuda' when asked or available, else 'cpu'. A machine without an NVIDIA device node is answered
    without importing torch (~1.5 s: `kb status` and a search with an embedder that needs no torch)."""
    if preference != "auto":
        return preference
    if not any(glob.glob(p) for p in ("/dev/nvidia[0-9]*", "/proc/driver/nvidia/gpus/*", "/dev/dxg")):  # dxg: WSL2
        return "cpu"
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def faiss_gpu_count() -> int:
    """Number of GPUs FAISS can use: 0 with faiss-cpu, and 0 with faiss-gpu on a machine without one."""
    import faiss

    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get else 0
