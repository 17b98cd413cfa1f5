"""The T0 importer: file names → dataset/template, clusters, answer options, empty files."""

import json

import pytest

from dianjing.generalist.mix import build_mixture, plan
from dianjing.generalist.registry import load_mixture, load_registries
from dianjing.generalist.t0 import CLUSTER_OF, build_registry, split_name
from tests.helpers import SHARED_DATA

REAL_T0 = SHARED_DATA / "multitask" / "t0"


def _file(folder, stem, pairs):
    (folder / f"{stem}.jsonl").write_text(
        "".join(json.dumps({"prompt": p, "completion": c + "<|endoftext|>"}) + "\n" for p, c in pairs))


@pytest.fixture
def t0_folder(tmp_path):
    f = tmp_path / "t0"
    f.mkdir()
    _file(f, "imdb_Movie_Expressed_Sentiment", [(f"review {i}. The sentiment is", "negative") for i in range(12)])
    _file(f, "rotten_tomatoes_Movie_Expressed_Sentiment", [(f"rt {i}. The sentiment is", "positive") for i in range(12)])
    _file(f, "yelp_review_full_format_score", [(f"yelp {i}\nScore:", str(1 + i % 5)) for i in range(20)])
    _file(f, "dbpedia_14_pick_one_category_for_the_following_text", [(f"text {i}", "Company") for i in range(8)])
    _file(f, "glue_mrpc_generate_paraphrase", [(f"Paraphrase: s{i}", f"p{i}") for i in range(8)])
    _file(f, "adversarial_qa_dbert_generate_question", [(f"Passage {i}", f"q{i}?") for i in range(8)])
    _file(f, "paws_labeled_final_Meaning", [(f"pair {i}", ["No", "Yes"][i % 2]) for i in range(12)])
    _file(f, "trec_trec1", [("q", "")] * 3)
    (f / "trec_fine_grained_ABBR.jsonl").write_text("")
    _file(f, "mystery_set_do_it", [("a", "b")] * 4)
    return f


def test_split_name_longest_prefix():
    assert split_name("adversarial_qa_dbert_answer_the_following_q") == ("adversarial_qa", "adversarial_qa_dbert",
                                                                        "answer_the_following_q")
    assert split_name("wiki_hop_original_generate_object") == ("wiki_hop", "wiki_hop_original", "generate_object")
    assert split_name("wiki_qa_Jeopardy_style")[::2] == ("wiki_qa", "Jeopardy_style")
    assert split_name("common_gen_Put_together")[0] == "common_gen"
    assert split_name("commonsense_qa_answer_to_question")[0] == "commonsense_qa"
    assert split_name("unknown_thing") == ("unknown_thing",) * 3


def test_build_registry_clusters_options_and_skips(t0_folder):
    said = []
    reg = build_registry(t0_folder, log=said.append)
    tasks = {t.name: t for t in reg.tasks}
    assert "trec_trec1" not in tasks and "trec_fine_grained_ABBR" not in tasks
    assert any("trec_trec1 (every completion is empty)" in s for s in said)
    assert any("mystery_set_do_it" in s and "unmapped" in s for s in said)
    imdb = tasks["imdb_Movie_Expressed_Sentiment"]
    assert imdb.dataset == "imdb" and imdb.cluster == "sentiment" and imdb.metric == "accuracy"
    assert imdb.options == ["negative", "positive"]  # one label in the file; pooled with rotten_tomatoes
    assert imdb.templates[0].name == "Movie_Expressed_Sentiment" and imdb.source == "t0:imdb_Movie_Expressed_Sentiment"
    assert tasks["yelp_review_full_format_score"].options == ["1", "2", "3", "4", "5"]
    assert len(tasks["dbpedia_14_pick_one_category_for_the_following_text"].options) == 14  # from KNOWN_OPTIONS
    gen = tasks["glue_mrpc_generate_paraphrase"]
    assert gen.options is None and gen.metric == "exact_match" and gen.cluster == "paraphrase"
    inv = tasks["adversarial_qa_dbert_generate_question"]
    assert inv.templates[0].turned_around and inv.metric == "rouge_l" and inv.dataset == "adversarial_qa"


def test_t0_mixture_strips_end_marker_and_holds_out(t0_folder, tmp_path):
    (tmp_path / "m.yaml").write_text(f"registries: [t0]\nt0_dir: {t0_folder}\nheld_out: [sentiment]\n")
    result = build_mixture(load_mixture(tmp_path / "m.yaml"), log=lambda *_: None)
    assert {e.cluster for e in result.examples} == {"paraphrase", "extractive_qa", "topic", "unmapped"}
    assert not any("<|endoftext|>" in e.target for e in result.examples)
    paws = next(e for e in result.examples if e.task == "paws_labeled_final_Meaning")
    assert paws.prompt.endswith("OPTIONS:\n- No\n- Yes") and paws.target in ("No", "Yes")
    assert set(result.report["held_out"]["sentiment"]) == {"imdb_Movie_Expressed_Sentiment",
                                                           "rotten_tomatoes_Movie_Expressed_Sentiment",
                                                           "yelp_review_full_format_score"}


def test_every_clustered_dataset_has_a_prefix():
    from dianjing.generalist.t0 import DATASETS

    assert set(DATASETS.values()) == set(CLUSTER_OF)


@pytest.mark.skipif(not REAL_T0.is_dir(), reason="the shared T0 data is not on this machine")
def test_real_t0_folder_and_shipped_mixture(monkeypatch):
    monkeypatch.setenv("DIANJING_T0_DIR", str(REAL_T0))
    mix = load_mixture("builtin:t0-sentiment-heldout")
    regs = load_registries(mix, log=lambda *_: None)
    p = plan(mix, regs)
    held = {t.dataset_id for t in p.held_out["sentiment"]}
    assert held == {"amazon_polarity", "app_reviews", "imdb", "rotten_tomatoes", "yelp_review_full"}
    assert not held & {t.dataset_id for t in p.train}
    clusters = {t.cluster for t in regs[0].tasks}
    assert clusters == {"sentiment", "topic", "paraphrase", "extractive_qa", "multiple_choice_qa", "closed_book_qa",
                        "summarisation", "structure_to_text"}
    sentiment = [t for t in p.held_out["sentiment"] if not t.templates[0].turned_around]
    assert all(t.options and len(t.options) >= 2 for t in sentiment)


def test_imported_registry_file_round_trips(t0_folder, tmp_path, capsys):
    from dianjing.cli import main

    reg = tmp_path / "t0-registry.yaml"
    assert main(["mix", "--import-t0", str(t0_folder), "--out", str(reg)]) == 0
    (tmp_path / "m.yaml").write_text("registries: [t0-registry.yaml]\nheld_out: [sentiment]\nmixing: {total: 20}\n")
    out = tmp_path / "mix.jsonl"
    assert main(["mix", str(tmp_path / "m.yaml"), "--out", str(out)]) == 0
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(rows) == 20 and not {r["dataset"] for r in rows} & {"imdb", "rotten_tomatoes", "yelp_review_full"}
    direct = build_mixture(load_mixture(tmp_path / "m.yaml"), log=lambda *_: None)
    assert [e.prompt for e in direct.examples] == [r["prompt"] for r in rows]
