"""One Home per process and data home (issue 24): every collection and caller shares its parts, and
several collections are searched as one ranking whose scores compare across them."""

import json
import threading

import pytest

from app.cli import main as cli
from app.worker import Worker
from kb.access import Identity
from kb.errors import ConfigError, PermissionDeniedError
from kb.home import Home
from kb.settings import EmbeddingSettings, RetrievalSettings, Settings


@pytest.fixture
def keyword_settings(tmp_path):
    """The stand-in embedder and keyword ranking only: the test controls every score."""
    return Settings(home=tmp_path / "home", embedding=EmbeddingSettings(model="hash-384"),
                    retrieval=RetrievalSettings(mode="keyword"))


def test_every_collection_and_caller_share_the_homes_parts(keyword_settings):
    home = Home(keyword_settings)
    a, b = home.collection("a"), home.collection("b").for_caller(Identity("bob", False, {"b": "read"}))
    for part in ("catalogue", "access", "jobs", "query_log", "embedder", "indexes", "writes"):
        assert getattr(a, part) is getattr(b, part) is getattr(home, part), part
    assert Worker(home).queue is home.jobs  # the job worker of `kb serve` and the web page too


def test_a_part_is_made_once_when_many_threads_ask_first(keyword_settings):
    home, start, got = Home(keyword_settings), threading.Barrier(8), []

    def first_use() -> None:
        start.wait()
        got.append((home.catalogue, home.query_log))

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(c) for c, _ in got}) == 1 and len({id(q) for _, q in got}) == 1
    assert sum(t.name == "kb-query-log" for t in threading.enumerate()) >= 1


def _write(folder, files: dict[str, str]):  # noqa: ANN202
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def test_several_collections_rank_as_one_with_comparable_scores(keyword_settings, tmp_path):
    """A collection that barely matches must not have its best chunk scored like the strong one's: the
    old merge scaled each collection alone (each best ≈ 1.0) and let the weak one into the top 3."""
    home = Home(keyword_settings)
    home.collection("strong").sync([_write(tmp_path / "strong", {
        "router.md": "# Router\n\nTo reset the router password hold the reset button of the router for ten seconds.\n",
        "router-admin.md": "# Admin page\n\nThe router password can be reset from the router admin page.\n",
        "router-guide.md": "# Guide\n\nReset the router, then choose a new router password.\n"})])
    home.collection("weak").sync([_write(tmp_path / "weak", {
        "canteen.md": "# Canteen\n\nThe canteen menu changes every Monday.\n",
        "wifi.md": "# Guest wifi\n\nThe guest wifi password is on the notice board.\n"})])
    question = "how do I reset the router password"
    both = home.collection("strong").reading(["weak", "strong"])
    contexts = both.search(question)
    assert {c.source.rsplit("/", 1)[-1] for c in contexts} == {"router.md", "router-guide.md", "router-admin.md"}
    alone = home.collection("weak").retrieve(question)
    assert alone.contexts[0].score == pytest.approx(contexts[0].score)  # alone, the weak one's best looks as good
    wifi = both.retrieve(question, top_k=10).contexts
    assert wifi[-1].source.endswith("wifi.md") and wifi[-1].score < 0.5 * contexts[0].score
    # Logged in each collection it searched.
    assert home.collection("weak").metrics().queries == 1 and home.collection("strong").metrics().queries == 1
    with pytest.raises(ConfigError, match="one collection"):
        both.sync([tmp_path / "strong"])


def test_reading_several_needs_read_on_each(keyword_settings, tmp_path):
    home = Home(keyword_settings)
    home.collection("a").sync([_write(tmp_path / "a", {"x.md": "# X\n\nalpha beta\n"})])
    home.collection("b").sync([_write(tmp_path / "b", {"y.md": "# Y\n\nalpha gamma\n"})])
    bob = Identity("bob", False, {"a": "read"})
    with pytest.raises(PermissionDeniedError):
        home.collection("a").for_caller(bob).reading(["a", "b"]).search("alpha")


def test_an_orphan_id_of_another_collection_is_not_pooled(keyword_settings, tmp_path):
    """After a crash an index may hold an id the catalogue has given to another collection's chunk: the
    pool keeps each id only from the collection it belongs to (never the same chunk twice)."""
    home = Home(keyword_settings)
    home.collection("a").sync([_write(tmp_path / "a", {"x.md": "# X\n\nthe pump impeller is blocked\n"})])
    home.collection("b").sync([_write(tmp_path / "b", {"y.md": "# Y\n\nthe pump impeller hums\n"})])
    (taken,) = home.catalogue.chunk_ids("b")
    (b_doc,) = [d.id for d in home.collection("b").documents()]
    keywords = home.indexes.for_writing("a")[1]  # a's keyword index now also claims b's chunk id
    keywords.stage([], [(taken, b_doc, "pump impeller pump impeller pump impeller")])
    keywords.commit([], [taken])
    keywords.settled()
    keywords.close()
    contexts = home.collection("a").reading(["a", "b"]).search("pump impeller", top_k=5)
    assert sorted(c.chunk_id for c in contexts) == sorted(home.catalogue.chunk_ids("a") | {taken})
    assert len({c.chunk_id for c in contexts}) == len(contexts)


def test_the_cli_searches_several_collections_or_all(keyword_settings, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KB_EMBEDDING__MODEL", "hash-384")
    home = str(tmp_path / "cli-home")
    assert cli(["--home", home, "--collection", "a", "reindex", str(_write(tmp_path / "a", {
        "x.md": "# Pumps\n\nError XQZ4471 means the impeller is blocked.\n"}))]) == 0
    assert cli(["--home", home, "--collection", "b", "reindex", str(_write(tmp_path / "b", {
        "y.md": "# Fans\n\nError XQZ4471 on a fan means its filter is full.\n"}))]) == 0
    capsys.readouterr()
    for which in ("a,b", "all"):
        assert cli(["--home", home, "--collection", which, "search", "XQZ4471", "--json"]) == 0
        assert {r["source"].rsplit("/", 1)[-1] for r in json.loads(capsys.readouterr().out)} == {"x.md", "y.md"}
    assert cli(["--home", home, "--collection", "a,b", "reindex"]) == 2
    assert "only search and ask" in capsys.readouterr().err


def test_the_extractor_is_injected_into_the_writer(tmp_path):
    """A Home given `InProcess` reads files without the worker pool (no process started for them), and
    indexes the same chunks as the pool does."""
    from ingest.extraction_worker import POOL, InProcess

    docs = _write(tmp_path / "docs", {"a.md": "# Pumps\n\nThe pump P4 needs a new seal.\n",
                                      "b.md": "# Fans\n\nThe fan F2 hums when dusty.\n"})
    started = POOL.started
    settings = Settings(home=tmp_path / "in", embedding=EmbeddingSettings(model="hash-384"))
    inprocess = Home(settings, extractor=InProcess()).collection()
    assert len(inprocess.sync([docs]).added) == 2 and POOL.started == started
    pooled = Home(settings.model_copy(update={"home": tmp_path / "pool"})).collection()
    assert len(pooled.sync([docs]).added) == 2
    texts = lambda kb: sorted(c.text for c in kb.search("pump seal", top_k=5, log=False))  # noqa: E731
    assert texts(inprocess) == texts(pooled) and texts(inprocess)
