"""Import direction: app -> retrieval, ingest -> kb. ingest and retrieval never import each other;
nothing imports app; kb imports no other project package except the facade (kb/knowledge_base.py and kb/home.py)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"kb", "ingest", "retrieval", "app"}
FACADE = {ROOT / "kb" / "knowledge_base.py", ROOT / "kb" / "home.py"}  # the view and the parts it shares
ALLOWED = {
    "app": {"app", "kb", "ingest", "retrieval"},
    "retrieval": {"retrieval", "kb"},
    "ingest": {"ingest", "kb"},
    "kb": {"kb"},
}


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out & PACKAGES


def test_dependency_direction():
    violations = []
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            allowed = ALLOWED[pkg] | ({"ingest", "retrieval"} if f in FACADE else set())
            bad = _imports(f) - allowed
            if bad:
                violations.append(f"{f.relative_to(ROOT)} imports {sorted(bad)}")
    assert not violations, violations


def _modules(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_nothing_in_kb_imports_the_facade():
    for f in (ROOT / "kb").rglob("*.py"):
        if f not in FACADE:
            assert not _modules(f) & {"kb.knowledge_base", "kb.home"}, f


def test_walker_detects_a_violation(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("from retrieval.dense import dense_search\nimport app.cli\n")
    assert _imports(bad) == {"retrieval", "app"}


# Writer code: what changes a collection's catalogue rows or indexes.
WRITER_MODULES = {"kb.chunk_store", "kb.embedding_cache", "ingest.pipeline", "ingest.writing", "ingest.rebuild",
                  "ingest.upkeep"}
READERS = [*(ROOT / "retrieval").rglob("*.py"), ROOT / "kb" / "index_store.py"]


def test_readers_import_no_writer_code():
    """The search path never reaches a writer by import; what it finds to repair it asks the home's upkeep
    (tests/kb/test_failed_commit.py checks that the repair then runs on the upkeep's thread)."""
    for f in READERS:
        assert not _modules(f) & WRITER_MODULES, f
