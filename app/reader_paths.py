"""What a caller who is not an administrator sees of the server's files: paths relative to the folder a
document was indexed from (that folder's name first: "handbook/travel/policy.pdf") or to the upload area
("uploads/policy.pdf"); never the data home, the catalogue URL or another absolute path."""

from __future__ import annotations

import re
from pathlib import Path

from kb.catalogue import Catalogue
from kb.document_lookup import indexed_roots
from ingest.uploads import uploads_dir

HIDDEN_KEYS = ("home", "catalogue_url")
DOCUMENT_TEXT = ("text", "sentences", "answer", "question", "heading", "reasoning", "content")  # kept as written
ABSOLUTE = re.compile(r"(?<![\w.~:/-])/(?:[^\s/:'\"]+/)+([^\s/:'\"]*)")  # what is left of a path outside the roots


class ReaderPaths:
    def __init__(self, catalogue: Catalogue, home: Path, collections: list[str]):
        home = Path(home).resolve()
        swaps = {str(uploads_dir(home, c)) + "/": "uploads/" for c in collections}
        for root in indexed_roots(catalogue, collections):
            swaps[root.rstrip("/") + "/"] = Path(root).name + "/"  # a folder: paths under it (a file: its name)
        swaps[str(home)] = "(home)"
        self.swaps = sorted(swaps.items(), key=lambda kv: -len(kv[0]))  # the longest (innermost) first

    def text(self, s: str) -> str:
        if "/" not in s:
            return s
        for full, shown in self.swaps:
            s = s.replace(full, shown)
        return ABSOLUTE.sub(lambda m: m.group(1) or "(path)", s)

    def scrub(self, data):  # noqa: ANN001, ANN201 - any JSON value
        """The same JSON value with every path shown as above and the server's own settings left out."""
        if isinstance(data, str):
            return self.text(data)
        if isinstance(data, list):
            return [self.scrub(v) for v in data]
        if isinstance(data, dict):
            return {k: v if k in DOCUMENT_TEXT else self.scrub(v) for k, v in data.items() if k not in HIDDEN_KEYS}
        return data
