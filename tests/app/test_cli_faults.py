"""The CLI under ordinary faults (issue 30, items 3 and 10): a closed pipe, a full disk, another node's
first write."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest

import kb.vector_index
from app.cli import main as cli
from tests.conftest import ROOT


def _docs(folder, names):  # noqa: ANN001, ANN202
    folder.mkdir()
    for n in names:
        (folder / f"{n}.md").write_text(f"# {n}\n\nError code {n.upper()}-7 means the {n} unit is blocked.\n")
    return folder


@pytest.mark.slow
def test_a_closed_pipe_ends_the_command_quietly(tmp_path):
    """`kb search --queries … --json | head -n 1`: the reader has what it wanted; no BrokenPipeError."""
    env = {**os.environ, "KB_EMBEDDING__MODEL": "hash-384"}
    home = str(tmp_path / "home")
    subprocess.run([sys.executable, "-m", "app.cli", "--home", home, "reindex", str(_docs(tmp_path / "d", ["pump", "fan"]))],
                   cwd=ROOT, env=env, check=True, capture_output=True, timeout=120)
    queries = tmp_path / "q.jsonl"
    queries.write_text("".join(json.dumps({"id": i, "question": "pump blocked"}) + "\n" for i in range(3000)))
    piped = subprocess.run(f"{sys.executable} -m app.cli --home {home} search --queries {queries} | head -n 1; "
                           "exit ${PIPESTATUS[0]}", shell=True, executable="/bin/bash", cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    assert piped.returncode == 0 and json.loads(piped.stdout)["id"] == 0
    assert "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr, piped.stderr


def test_a_full_disk_is_one_line_and_exit_3(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KB_EMBEDDING__MODEL", "hash-384")

    def disk_full(path, data):  # a FAKE full disk under the FAISS save
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(kb.vector_index, "atomic_write", disk_full)
    assert cli(["--home", str(tmp_path / "home"), "reindex", str(_docs(tmp_path / "d", ["pump"]))]) == 3
    err = capsys.readouterr().err
    assert err.startswith("kb: the disk is full") and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_another_nodes_first_write_is_not_reported_as_a_repair(tmp_path, postgres_url, monkeypatch, capsys):
    """Two homes (two machines) share one PostgreSQL catalogue: the second's first write builds its own
    indexes from the catalogue; that is no damage and must not read like one."""
    monkeypatch.setenv("KB_EMBEDDING__MODEL", "hash-384")
    monkeypatch.setenv("KB_DATABASE_URL", postgres_url)
    assert cli(["--home", str(tmp_path / "a"), "ingest", str(_docs(tmp_path / "one", ["pump", "fan"]))]) == 0
    capsys.readouterr()
    assert cli(["--home", str(tmp_path / "b"), "ingest", str(_docs(tmp_path / "two", ["valve"]))]) == 0
    out = capsys.readouterr().out
    assert "added" in out and "repaired" not in out, out
    assert cli(["--home", str(tmp_path / "b"), "search", "PUMP-7", "--top-k", "5", "--json"]) == 0
    assert "pump.md" in {r["source"].rsplit("/", 1)[-1] for r in json.loads(capsys.readouterr().out)}  # the other's too


def test_a_node_only_behind_the_catalogue_is_not_called_damaged(tmp_path, postgres_url, monkeypatch, capsys):
    """status --check on a node whose index misses another node's latest write: behind, not DAMAGED
    (exit 0); real damage still exits 1 (issue 30, item 9)."""
    monkeypatch.setenv("KB_EMBEDDING__MODEL", "hash-384")
    monkeypatch.setenv("KB_DATABASE_URL", postgres_url)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert cli(["--home", a, "ingest", str(_docs(tmp_path / "one", ["pump"]))]) == 0
    assert cli(["--home", b, "search", "PUMP-7"]) == 0  # node b has its indexes, up to date
    assert cli(["--home", a, "ingest", str(_docs(tmp_path / "two", ["valve"]))]) == 0  # a writes again
    capsys.readouterr()
    assert cli(["--home", b, "status", "--check"]) == 0
    out = capsys.readouterr().out
    assert "behind the catalogue" in out and "DAMAGED" not in out, out
    (tmp_path / "b" / "collections" / "default" / "index.faiss").write_bytes(b"garbage")
    assert cli(["--home", b, "status", "--check"]) == 1
    assert "DAMAGED" in capsys.readouterr().out


@pytest.mark.slow
def test_servers_meeting_a_damaged_catalogue_at_start_say_so_in_one_line(tmp_path):
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "catalogue.sqlite3").write_bytes(b"\x00" * 4096)  # not a database
    for command in (["worker"], ["serve", "--port", "9"], ["ui", "--port", "9"]):
        r = subprocess.run([sys.executable, "-m", "app.cli", "--home", str(home), *command], cwd=ROOT,
                           env={**os.environ, "KB_EMBEDDING__MODEL": "hash-384"}, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 2 and "Traceback" not in r.stderr, (command, r.stderr)
        assert "kb rebuild-catalogue" in r.stderr and len(r.stderr.strip().splitlines()) == 1, (command, r.stderr)


def test_rebuild_catalogue_checks_the_collection_name_before_moving_anything(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KB_EMBEDDING__MODEL", "hash-384")
    home = tmp_path / "home"
    assert cli(["--home", str(home), "reindex", str(_docs(tmp_path / "d", ["pump"]))]) == 0
    before = sorted(p.name for p in home.iterdir())
    assert cli(["--home", str(home), "--collection", "../x", "rebuild-catalogue", "--force", str(tmp_path / "d")]) == 2
    assert "invalid collection name" in capsys.readouterr().err
    assert sorted(p.name for p in home.iterdir()) == before  # the catalogue was not moved aside
    assert (home / "collections" / "default" / "index.faiss").exists()  # nor an index dropped


def test_a_vector_index_whose_repair_fails_is_an_error_at_once(tmp_path, monkeypatch):
    """The reader waits for the upkeep's repair, but not for one that has just failed: the question gets
    the index's error in seconds, not after the 120 s a repair may take."""
    import time

    from ingest.writing import Writes
    from kb.errors import IndexCorruptError
    from kb.home import Home
    from kb.settings import EmbeddingSettings, Settings

    settings = Settings(home=tmp_path / "home", embedding=EmbeddingSettings(model="hash-384"))
    Home(settings).collection().sync([_docs(tmp_path / "d", ["pump", "fan"])])
    index = settings.home / "collections" / "default" / "index.faiss"
    index.write_bytes(index.read_bytes()[:-64] + bytes(64))

    def refused(self, collection, on_wait=None):  # noqa: ANN001, ANN202 - a FAKE failing repair
        raise RuntimeError("no repair today")

    monkeypatch.setattr(Writes, "repair", refused)
    t0 = time.monotonic()
    with pytest.raises(IndexCorruptError, match="checksum"):
        Home(settings).collection().search("pump blocked", log=False)
    assert time.monotonic() - t0 < 15
