"""`kb eval` against ../shared/eval's own scorer on the same results, on a slice of debian_faq_en."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from app.cli import main as cli
from kb.knowledge_base import KnowledgeBase
from retrieval.evaluation import hit, rouge_l
from tests.conftest import FAST_MODEL, ROOT

DATA = ROOT / "tests" / "data"
SHARED_SCORER = ROOT.parent / "shared" / "eval" / "score.py"
SCORER = SHARED_SCORER if SHARED_SCORER.exists() else DATA / "score.py"


@pytest.fixture
def slice_(tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(DATA / "faq_en_slice" / "corpus", corpus)
    qa = DATA / "faq_en_slice" / "qa.jsonl"
    return qa, corpus, len(qa.read_text().splitlines())


def test_kb_eval_agrees_with_score_py(slice_, tmp_path, monkeypatch, capsys):
    qa, corpus, n = slice_
    monkeypatch.setenv("KB_EMBEDDING__MODEL", FAST_MODEL)
    home, results = tmp_path / "home", tmp_path / "results.jsonl"
    assert cli(["--home", str(home), "eval", str(qa), "--corpus", str(corpus), "--results", str(results),
                "--backend", "extractive", "--json"]) == 0
    ours = json.loads(capsys.readouterr().out)
    out = tmp_path / "score.json"
    subprocess.run([sys.executable, str(SCORER), "--qa", str(qa), "--results", str(results),
                    "--json", str(out)], check=True, capture_output=True)
    theirs = json.loads(out.read_text())["metrics"]
    assert ours["questions"] == n == theirs["questions"]
    for k in ("recall@1", "recall@3", "recall@5", "mrr@10"):
        assert ours[k] == pytest.approx(theirs[k], abs=1e-4), k
    assert ours["recall@3"] > 0.5  # a real retrieval, not an empty one that trivially agrees
    assert 0 < ours["ndcg@10"] <= 1 and ours["queries_per_s"] > 0
    assert {"embed", "dense", "keyword", "total"} <= set(ours["latency"])
    a = ours["answers"]
    assert a["questions"] == n and 0 < a["citation_precision"] <= 1 and a["answer_support"] > 0.9
    assert 0 < a["rouge_l"] < 1
    # stored for the UI's status page
    assert KnowledgeBase(home=home).status().last_evaluation["recall@3"] == ours["recall@3"]


def test_hit_rule_and_rouge():
    answer = "Debian GNU/Linux is a distribution of the Linux operating system with many packages."
    assert hit("/x/a.html", "... a distribution of the Linux operating system with many packages ...", "a.html", answer)
    assert not hit("/x/b.html", answer, "a.html", answer)  # right text, wrong file
    assert not hit("/x/a.html", "Debian GNU/Linux is a distribution", "a.html", answer)  # too short a run
    assert rouge_l("the cat sat", "the cat sat") == pytest.approx(1.0)
    assert rouge_l("猫坐着", "猫在坐着") == pytest.approx(2 * (3 / 3) * (3 / 4) / (3 / 3 + 3 / 4))
    assert rouge_l("", "x") == 0.0
