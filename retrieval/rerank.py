"""The optional cross-encoder reranker (`KB_RETRIEVAL__RERANKER`): any sentence-transformers
`CrossEncoder` id or local path; none ships offline, so it is off by default."""

from __future__ import annotations

from kb.device import torch_device
from kb.errors import ConfigError


def make_reranker(name: str | None, device: str = "auto"):  # noqa: ANN201 - a CrossEncoder, or None
    if not name:
        return None
    from sentence_transformers import CrossEncoder

    try:
        return CrossEncoder(name, device=torch_device(device), local_files_only=True)  # never a download
    except Exception as exc:  # noqa: BLE001 - any load failure becomes one clear error
        raise ConfigError(f"cannot load the reranker {name!r}: {exc}") from exc
