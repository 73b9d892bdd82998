"""The keyword (BM25) index of one collection, in tantivy: kb's own terms in, top candidates out.

Everything about keywords lives here: the terms (jieba search-mode words for Chinese, through the
Rust port `rjieba` — same dictionary, same output, ~10x faster; NFKC-lower-cased English words with a
light plural fold), handed to tantivy pre-tokenized so ingestion and questions always split text the
same way; the writer; the reader; the repair. Ranking is tantivy's BM25 (k1 1.2, b 0.75) with block-max WAND pruning: a question
never scores most postings of a common term, and only the top candidates cross into Python.

Like the FAISS index it is a derived copy of the catalogue: writes commit here before the catalogue
commits, and a journal of the ids being changed (`keywords.pending.json`, beside the folder) lets
reconciliation repair exactly those after a crash; a count or highest id that differs from the
catalogue's triggers a full comparison.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import shutil
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import rjieba
import tantivy

from kb.files import atomic_write
from kb.errors import DiskFull, IndexCorruptError
from kb.text import CJK

log = logging.getLogger(__name__)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()

# -- terms -----------------------------------------------------------------------------------------
# Part of the index identity (in the manifest): changing the rules makes every entry stale, and the
# identity check then says "run `kb reindex --full`".
TOKENIZER_ID = "jieba-rs-search+en-words-v2"

# Runs of CJK ideographs, or ASCII words with inner dots/dashes/apostrophes (apt-get, 2.6.32, don't).
_TOKEN = re.compile(f"[{CJK}]+|[a-z0-9_]+(?:[.\\-'][a-z0-9_]+)*")
_CJK_FIRST = CJK[0]  # the lowest code point of the CJK ranges

# Words so common they only add noise to BM25 (small on purpose: recall matters more than size).
STOP_EN = frozenset(
    "a an and are as at be by can do does for from how i if in is it its of on or that the this to was what "
    "when where which who why will with you your my me we our not no".split()
)
STOP_ZH = frozenset("的 了 是 在 和 与 或 及 吗 呢 吧 啊 么 什么 怎么 怎样 如何 哪些 哪个 为什么 是否 一个 我 你 他 她 它 我们 您 这 那 有 也 就 都 把 被 让 给 中 上 下".split())


def _stem(word: str) -> str:
    """A light English plural/verb-ending fold (packages -> package), enough for BM25 matching."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _cjk_words(runs: list[str]) -> list[list[str]]:
    """Search-mode words of each CJK run, from one segmenter call (the per-call cost dominates short runs)."""
    out: list[list[str]] = [[]]
    for w in rjieba.cut_for_search("\n".join(runs)):
        if w == "\n":
            out.append([])
        elif w not in STOP_ZH:
            out[-1].append(w)
    if len(out) != len(runs):  # never seen; keep correctness over speed if the separator were split
        return [[w for w in rjieba.cut_for_search(r) if w not in STOP_ZH] for r in runs]
    return out


@lru_cache(maxsize=1 << 18)
def _english(token: str) -> str | None:
    """The term of an English token, None for a stop word (cached: words repeat, Zipf's law)."""
    return None if token in STOP_EN else _stem(token)


def terms(text: str) -> list[str]:
    """The keyword terms of a text, in order (repeats kept: term frequency matters)."""
    tokens = _TOKEN.findall(unicodedata.normalize("NFKC", text).lower())
    runs = [t for t in tokens if t[0] >= _CJK_FIRST]  # an ASCII token never starts that high
    if not runs:
        return [w for w in map(_english, tokens) if w]
    words = iter(_cjk_words(runs))
    out: list[str] = []
    for t in tokens:
        if t[0] >= _CJK_FIRST:
            out += next(words)
        elif w := _english(t):
            out.append(w)
    return out


def index_text(text: str) -> str:
    """The same terms as `terms`, space-joined for the index, English first: the index keeps only
    frequencies, so the order does not matter and the interleaving step is skipped (writes are hot)."""
    tokens = _TOKEN.findall(unicodedata.normalize("NFKC", text).lower())
    english = [w for t in tokens if t[0] < _CJK_FIRST and (w := _english(t))]
    runs = [t for t in tokens if t[0] >= _CJK_FIRST]
    if runs:
        english += [w for w in rjieba.cut_for_search("\n".join(runs)) if w != "\n" and w not in STOP_ZH]
    return " ".join(english)


# -- the index -------------------------------------------------------------------------------------

# tantivy reads its own older index formats; what would make entries stale is the ranking or the terms.
ENGINE_ID = f"tantivy-bm25+{TOKENIZER_ID}"
_FIELD = "terms"


@dataclass
class KeywordHits:
    ranking: list[tuple[int, float]]  # (chunk id, BM25 score), best first
    coverage: float  # best share of the question's IDF weight found in one chunk (0 = no term matched)
    docs: int = 0  # chunks in the index, and how many hold each question term (the IDF's inputs):
    doc_freq: dict[str, tuple[int, int]] = field(default_factory=dict)  # term -> (times asked, chunks)
    notes: list[str] = field(default_factory=list)  # why keywords had no say (a damaged index being rebuilt)

    def idf_weight(self, docs: int, doc_freq: dict[str, int]) -> float:
        """The question's IDF weight over the terms this index holds, with these statistics."""
        return sum(c * bm25_idf(docs, doc_freq[t]) for t, (c, df) in self.doc_freq.items() if df)


def bm25_idf(docs: int, df: int) -> float:
    return math.log(1 + (docs - df + 0.5) / (df + 0.5))


def _schema() -> tantivy.Schema:
    b = tantivy.SchemaBuilder()
    b.add_integer_field("chunk_id", stored=False, indexed=True, fast=True)
    b.add_integer_field("document_id", stored=False, indexed=True, fast=True)
    # kb's terms joined by spaces; tantivy's whitespace tokenizer splits them back unchanged (terms
    # hold no spaces), frequencies only: positions are not needed for BM25
    b.add_text_field(_FIELD, stored=False, tokenizer_name="whitespace", index_option="freq")
    return b.build()


MUTABLE = {"meta.json", ".managed.json", ".tantivy-writer.lock", ".tantivy-meta.lock"}  # the rest never change


def _is_damage(exc: BaseException) -> bool:
    """What tantivy raises for a garbled index: a Rust panic (pyo3's PanicException, a BaseException, not
    an Exception) or a ValueError (its one error type). A full disk is not damage: it becomes DiskFull;
    a busy lock or anything else passes as it is."""
    if type(exc).__name__ == "PanicException":
        return True
    if not isinstance(exc, ValueError):
        return False
    text = str(exc).lower()
    if "no space left" in text:
        raise DiskFull(f"the disk holding the keyword index is full ({str(exc)[:200]}); nothing was kept. "
                       "Free some space and try again") from None
    return "lock" not in text


@contextmanager
def _damage_is_an_error(index: KeywordIndex) -> Iterator[None]:
    """A panic or a read error inside tantivy (a garbled segment) becomes an IndexCorruptError, and the
    index is marked damaged so that the next writer rebuilds it from the catalogue."""
    try:
        yield
    except IndexCorruptError:
        raise
    except BaseException as exc:
        if not _is_damage(exc):
            raise
        index.mark_damaged(f"{type(exc).__name__}: {str(exc)[:200]}")
        raise IndexCorruptError(f"the keyword index {index.directory} is damaged ({str(exc)[:200]})") from None


class Unreadable:
    """Stands for a damaged keyword index until the upkeep (or the running writer) has rebuilt it: every
    search says so, and the retriever answers from the dense side with a note; it counts no entries."""

    def __init__(self, reason: str):
        self.reason = reason

    def search(self, question: str, k: int, document_ids: set[int] | None = None) -> KeywordHits:
        raise IndexCorruptError(self.reason)

    count = 0


class KeywordIndex:
    """One collection's tantivy index in `directory`; the caller holds the writer lock for writes.
    A reader (`for_reading`) never creates files: where no index exists yet it searches an empty one.

    Integrity: tantivy's segment files never change once written, so after each commit kb records a
    sha256 of every new one (`keywords.sums.json` beside the folder); `verify()` compares them
    (`kb status --check`). A garbled segment found there, or by a panic in a search, marks the index
    damaged (`keywords.damaged`): readers then repair, and the writer rebuilds it from the catalogue."""

    def __init__(self, directory: Path, create: bool = True):
        self.directory = Path(directory)
        self.journal = self.directory.parent / "keywords.pending.json"
        self.sums_file = self.sums_path(self.directory)
        self.damaged_file = self.damaged_mark(self.directory)
        self.schema = _schema()
        if not create and self.damaged_file.exists():
            raise IndexCorruptError(f"the keyword index {self.directory} is damaged "
                                    f"({self.damaged_file.read_text()[:300]}); it is rebuilt from the catalogue")
        try:
            if create:
                self.directory.mkdir(parents=True, exist_ok=True)
            elif not (self.directory / "meta.json").exists():
                self.index = tantivy.Index(self.schema)  # in memory, empty
                self._writer = None
                return
            self.index = tantivy.Index(self.schema, path=str(self.directory), reuse=True)
        except BaseException as exc:
            if not _is_damage(exc):
                raise
            raise IndexCorruptError(f"cannot open the keyword index {self.directory}: {str(exc)[:300]}") from None
        self._writer = None

    @staticmethod
    def damaged_mark(directory: Path) -> Path:
        """Beside the folder: says the index is damaged (what was found) until it is rebuilt."""
        return Path(directory).parent / "keywords.damaged"

    @staticmethod
    def sums_path(directory: Path) -> Path:
        return Path(directory).parent / "keywords.sums.json"

    @classmethod
    def for_reading(cls, directory: Path) -> KeywordIndex:
        return cls(directory, create=False)

    @classmethod
    def open_or_reset(cls, directory: Path) -> KeywordIndex:
        """Open it for writing; a damaged one is deleted and started empty, with a journal that makes the
        next reconciliation compare it in full with the catalogue (and refill it from the stored text)."""
        damaged = cls.damaged_mark(directory)
        try:
            if damaged.exists():
                raise IndexCorruptError(f"the keyword index {directory} is damaged ({damaged.read_text()[:300]})")
            return cls(directory)
        except IndexCorruptError as exc:
            log.warning("%s; rebuilding it from the catalogue", exc)
            shutil.rmtree(directory, ignore_errors=True)
            cls.sums_path(directory).unlink(missing_ok=True)
            index = cls(directory)
            index.write_journal({"full": True})  # before the mark goes: a crash now still rebuilds it
            damaged.unlink(missing_ok=True)
            return index

    # -- integrity ---------------------------------------------------------------------------
    def mark_damaged(self, reason: str) -> None:
        try:
            atomic_write(self.damaged_file, reason.encode())
        except OSError as exc:  # a read-only home: the error is still raised to the caller
            log.warning("could not mark %s damaged: %s", self.directory, exc)

    def _segment_files(self) -> list[Path]:
        return sorted(f for f in self.directory.iterdir() if f.is_file() and f.name not in MUTABLE) \
            if self.directory.is_dir() else []

    def _sums(self) -> dict[str, str]:
        try:
            return json.loads(self.sums_file.read_text())
        except (OSError, ValueError):
            return {}

    def record_sums(self) -> None:
        """Hash the files of committed segments not hashed yet (new ones only: the cost follows what was
        written). Files of a segment meta.json does not list yet (a merge still writing) wait for the next
        call: they may be half-written."""
        old, live = self._sums(), self._live_files(recorded=False)
        sums = {f.name: old.get(f.name) or _sha256(f) for f in self._segment_files() if f.name in live}
        if sums != old:
            atomic_write(self.sums_file, json.dumps(sums, indent=0, sort_keys=True).encode())

    def verify(self) -> list[str]:
        """Problems found: a recorded segment file that changed or went missing, or a full read of the
        index that fails. Damage found marks the index for a rebuild."""
        sums, problems = self._sums(), []
        present = {f.name for f in self._segment_files()}
        live = self._live_files()
        for name, digest in sums.items():
            if name in present and _sha256(self.directory / name) != digest:
                problems.append(f"{name} changed since it was written (a damaged disk or copy?)")
            elif name not in present and name in live:
                problems.append(f"{name} is missing")
        if not problems:
            try:
                with _damage_is_an_error(self):
                    self.ids()
            except IndexCorruptError as exc:
                problems.append(str(exc))
        if problems:
            self.mark_damaged("; ".join(problems))
        return problems

    def _live_files(self, recorded: bool = True) -> set[str]:
        """The segment files meta.json refers to (by segment id prefix): present ones, and with
        `recorded` also recorded ones that should be there."""
        try:
            meta = json.loads((self.directory / "meta.json").read_text())
        except (OSError, ValueError):
            return set()
        ids = {seg["segment_id"].replace("-", "") for seg in meta.get("segments", [])}
        present = {f.name for f in self._segment_files() if f.name.split(".")[0] in ids}
        return present | ({n for n in self._sums() if n.split(".")[0] in ids} if recorded else set())

    @property
    def count(self) -> int:
        with _damage_is_an_error(self):
            return int(self.index.searcher().num_docs)

    def max_id(self) -> int | None:
        """The highest chunk id held (new chunks always get higher ids: a replaced batch changes it)."""
        with _damage_is_an_error(self):
            searcher = self.index.searcher()
            if not searcher.num_docs:
                return None
            hits = searcher.search(tantivy.Query.all_query(), 1, count=False, order_by_field="chunk_id").hits
            return int(hits[0][0]) if hits else None

    def write_journal(self, entry: dict) -> None:
        atomic_write(self.journal, json.dumps(entry).encode())

    # -- writes ----------------------------------------------------------------------------
    def _writer_(self):  # noqa: ANN202 - a tantivy.IndexWriter, opened on first write
        if self._writer is None:
            self._writer = self.index.writer(heap_size=64_000_000, num_threads=1)
        return self._writer

    def stage(self, remove: Iterable[int], add: Iterable[tuple[int, int, str]]) -> None:
        """Queue removals (chunk ids) and additions (chunk id, document id, embedded text); `commit` applies."""
        w = self._writer_()
        for cid in remove:
            w.delete_documents_by_term("chunk_id", int(cid))
        for cid, doc_id, text in add:
            w.add_document(tantivy.Document(chunk_id=int(cid), document_id=int(doc_id), **{_FIELD: index_text(text)}))

    def commit(self, removed: Iterable[int], added: Iterable[int]) -> None:
        """Journal the ids, then commit. The journal stays until `settled()` after the catalogue commits."""
        if not self.journal.exists():  # a pending {"full": true} (a reset index) must survive until repaired
            self.write_journal({"remove": [int(i) for i in removed], "add": [int(i) for i in added]})
        with _damage_is_an_error(self):
            self._writer_().commit()
            self.index.reload()
        self.record_sums()

    def settled(self) -> None:
        """The catalogue has committed the journalled change."""
        self.journal.unlink(missing_ok=True)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.wait_merging_threads()  # also releases tantivy's own writer lock
            self._writer = None
            self.record_sums()  # the segments merges wrote meanwhile

    # -- consistency -----------------------------------------------------------------------
    def ids(self) -> set[int]:
        """Every chunk id in the index (a full scan: used only when a repair needs it)."""
        with _damage_is_an_error(self):
            return self._ids()

    def _ids(self) -> set[int]:
        searcher = self.index.searcher()
        n = searcher.num_docs
        if not n:
            return set()
        hits = searcher.search(tantivy.Query.all_query(), limit=n, count=False).hits
        return {int(v) for v in searcher.fast_field_values("chunk_id", [a for _, a in hits])}

    def suspects(self, catalogue_count: int, catalogue_max_id: int | None) -> set[int] | None:
        """Ids a crash may have left out of step (from the journal), or None when everything must be
        compared: no journal, but a count or a highest id that differs from the catalogue's."""
        if self.journal.exists():
            try:
                j = json.loads(self.journal.read_text())
                return {int(i) for i in j["remove"]} | {int(i) for i in j["add"]}
            except (ValueError, KeyError, TypeError):
                return None  # {"full": true}, or a journal cut short
        return set() if (self.count, self.max_id()) == (catalogue_count, catalogue_max_id) else None

    # -- search ----------------------------------------------------------------------------
    def search(self, question: str, k: int, document_ids: set[int] | None = None) -> KeywordHits:
        """BM25 top-k inside tantivy; document filters applied inside the engine too."""
        with _damage_is_an_error(self):
            return self._search(question, k, document_ids)

    def _search(self, question: str, k: int, document_ids: set[int] | None) -> KeywordHits:
        query = Counter(terms(question))
        searcher = self.index.searcher()
        n = searcher.num_docs
        if not query or not n or document_ids == set():
            return KeywordHits([], 0.0)
        clauses = []
        for t, c in query.items():
            q = tantivy.Query.term_query(self.schema, _FIELD, t, index_option="freq")
            clauses.append((tantivy.Occur.Should, q if c == 1 else tantivy.Query.boost_query(q, float(c))))
        q = tantivy.Query.boolean_query(clauses)
        if document_ids is not None:
            only = tantivy.Query.const_score_query(
                tantivy.Query.term_set_query(self.schema, "document_id", sorted(document_ids)), 0.0)
            q = tantivy.Query.boolean_query([(tantivy.Occur.Must, q), (tantivy.Occur.Must, only)])
        hits = searcher.search(q, limit=k, count=False).hits
        stats = {t: (c, searcher.doc_freq(_FIELD, t)) for t, c in query.items()}
        if not hits:
            return KeywordHits([], 0.0, n, stats)
        ids = [int(v) for v in searcher.fast_field_values("chunk_id", [a for _, a in hits])]
        ranking = sorted(((i, float(s)) for (s, _), i in zip(hits, ids, strict=True)), key=lambda kv: (-kv[1], kv[0]))
        return KeywordHits(ranking, self._coverage(searcher, query, n, dict(ranking), stats), n, stats)

    def _coverage(self, searcher, query: Counter, n: int, top: dict[int, float],  # noqa: ANN001
                  stats: dict[str, tuple[int, int]]) -> float:
        """The best share of the question's IDF weight held by one of the top chunks. Terms unknown to
        the collection count at full IDF, so an off-topic question has low coverage."""
        idf = {t: bm25_idf(n, stats[t][1]) for t in query}
        total = sum(query[t] * idf[t] for t in query) or 1.0
        matched: Counter[int] = Counter()
        # a disjunction of id lookups: far cheaper than a TermSetQuery, which scans the id dictionary
        among = tantivy.Query.boolean_query(
            [(tantivy.Occur.Should, tantivy.Query.term_query(self.schema, "chunk_id", i)) for i in sorted(top)])
        for t in query:
            q = tantivy.Query.boolean_query([
                (tantivy.Occur.Must, tantivy.Query.term_query(self.schema, _FIELD, t, index_option="freq")),
                (tantivy.Occur.Must, among)])
            found = searcher.search(q, limit=len(top), count=False).hits
            for cid in searcher.fast_field_values("chunk_id", [a for _, a in found]):
                matched[int(cid)] += query[t] * idf[t]
        return max(matched.values(), default=0.0) / total
