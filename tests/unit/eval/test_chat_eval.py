"""Chat eval without a model: items read from every kind of file, the metric chosen and said, and the
scores of fixed generations computed by hand."""

import json
import math

import pytest

from dianjing.errors import ConfigError, DataError
from dianjing.eval.chat import aggregate, by_category, choose_metric, item_scores
from dianjing.eval.items import EvalItem, read_eval_file
from dianjing.eval.metrics import contains_answer, perplexity
from dianjing.eval.runner import Result


def _write(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _quiet(*_):
    pass


def test_contains_answer_and_perplexity():
    assert contains_answer("台灣最高的山是玉山。", "玉山") == 1.0 and contains_answer("是雪山", "玉山") == 0.0
    assert contains_answer("The answer is 42.", "42") == 1.0 and contains_answer("The answer is 42.", "4") == 0.0
    assert contains_answer("It is New York City", "new york") == 1.0 and contains_answer("York, New", "New York") == 0.0
    p = perplexity([[-1.0, -2.0], [-3.0]])  # every token weighs the same
    assert p["nll"] == 2.0 and p["perplexity"] == pytest.approx(math.e ** 2) and p["tokens"] == 3
    assert perplexity([])["perplexity"] is None


def test_scores_of_fixed_generations():
    zh = item_scores(EvalItem("1", "f:1", [], "玉山"), Result(answer="台灣最高的山是玉山。"))
    # answer tokens: 台 灣 最 高 的 山 是 玉 山 against 玉 山: 2 in common, p = 2/9, r = 1
    assert zh["exact_match"] == 0.0 and zh["contains"] == 1.0
    assert zh["f1"] == pytest.approx(2 * (2 / 9) / (2 / 9 + 1))
    en = item_scores(EvalItem("2", "f:2", [], "Canberra"), Result(answer="The capital is Canberra."))
    assert en["f1"] == pytest.approx(0.5) and en["contains"] == 1.0  # QA drops "the": capital, is, canberra
    assert en["rouge_l"] == pytest.approx(0.4)  # ROUGE keeps it: p = 1/4, r = 1
    same = item_scores(EvalItem("3", "f:3", [], "Paris."), Result(answer="paris"))
    assert same["exact_match"] == 1.0 and same["f1"] == 1.0
    # with a short answer, EM / F1 / contains compare with it, ROUGE-L with the whole reference
    key = item_scores(EvalItem("4", "f:4", [], "台灣最高的山是玉山，海拔 3,952 公尺。", short_answer="玉山"),
                      Result(answer="玉山"))
    assert key["exact_match"] == 1.0 and key["contains"] == 1.0 and key["rouge_l"] < 0.5
    echo = item_scores(EvalItem("5", "f:5", [], "台灣最高的山是玉山。", short_answer="玉山"),
                       Result(answer="台灣最高的山是哪座？"))  # echoing the question scores nothing
    assert echo["f1"] < 0.2 and echo["contains"] == 0.0 and echo["rouge_l"] > 0.5  # F1: the 山 of 最高的山 is shared


def test_options_by_summed_and_by_per_token_log_likelihood():
    it = EvalItem("1", "f:1", [], "red", options=["red", "blue"])
    s = item_scores(it, Result(option_logprobs=[[-0.3, -0.3], [-0.5]], reference_logprobs=[-0.5, -1.5]))
    assert s["chosen"] == "blue" and s["accuracy"] == 0.0  # summed: -0.6 < -0.5
    assert s["chosen_norm"] == "red" and s["accuracy_norm"] == 1.0  # per token: -0.3 > -0.5
    assert s["nll"] == 1.0 and s["reference_tokens"] == 2 and "f1" not in s  # no generation: no answer scores


def test_aggregate_in_percent_and_per_category():
    items = [EvalItem(str(i), f"f:{i}", [], "yes", category="c" if i else "d") for i in range(4)]
    results = [Result(answer=a, reference_logprobs=[-1.0]) for a in ("yes", "no", "yes", "")]
    scores = [item_scores(i, r) for i, r in zip(items, results)]
    agg = aggregate(items, results, scores)
    assert agg["n"] == 4 and agg["exact_match"] == 50.0 and agg["empty_answers"] == 1
    assert agg["perplexity"] == pytest.approx(math.e, abs=1e-3) and agg["reference_tokens"] == 4
    cats = by_category(items, results, scores)
    assert cats["d"]["n"] == 1 and cats["d"]["exact_match"] == 100.0 and cats["c"]["n"] == 3


def test_items_from_an_instruction_file_with_options_categories_and_bad_records(tmp_path):
    p = _write(tmp_path / "mc.jsonl", [
        {"instruction": "Colour of the sky?", "output": "blue", "options": ["blue", "green"], "category": "science"},
        {"instruction": "Colour of grass?", "output": "green", "choices": ["red", "green", "blue"]},
        {"instruction": "Pick.", "output": "pink", "options": ["red", "blue"]},  # the answer is not an option
        {"instruction": "Pick.", "output": "red", "options": "red"},  # not a list
        {"instruction": "No answer?"}])  # no output: the chat readers' own error
    ef = read_eval_file(p, log=_quiet)
    assert [it.options for it in ef.items] == [["blue", "green"], ["red", "green", "blue"]]
    assert ef.items[0].category == "science" and ef.items[0].messages == [{"role": "user", "content": "Colour of the sky?"}]
    assert ef.records == 5 and ef.skipped.total == 3
    assert any("not one of the options" in r for r in ef.skipped.counts)
    assert "field 'options': expected a list of answers (in CSV: a JSON list)" in ef.skipped.counts
    assert choose_metric(ef, "auto")[0] == "accuracy"
    with pytest.raises(DataError, match=r"mc.jsonl:5: field 'output': missing"):
        read_eval_file(p, on_error="stop", log=_quiet)
    with pytest.raises(DataError, match=r"mc2.jsonl:3: field 'options': the reference answer .* is not one of"):
        read_eval_file(_write(tmp_path / "mc2.jsonl", _rows_without_the_last(p)), on_error="stop", log=_quiet)


def _rows_without_the_last(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")][:-1]


def test_the_prompt_is_everything_before_the_last_answer(tmp_path):
    p = _write(tmp_path / "chat.jsonl", [{"conversations": [
        {"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"},
        {"from": "human", "value": "Capital of France?"}, {"from": "gpt", "value": "Paris"}]}])
    ef = read_eval_file(p, log=_quiet)
    assert ef.format == "sharegpt" and ef.items[0].reference == "Paris"
    assert [m["role"] for m in ef.items[0].messages] == ["system", "user", "assistant", "user"]


def test_items_from_a_question_set_use_the_references_as_history(tmp_path):
    p = _write(tmp_path / "q.jsonl", [
        {"question_id": 1, "category": "maths", "turns": ["1+1?", "and times 3?"], "reference": ["2", "6"]},
        {"question_id": 2, "category": "writing", "turns": ["A poem."]}])
    ef = read_eval_file(p, system_prompt="You are helpful.", log=_quiet)
    assert [it.id for it in ef.items] == ["1/1", "1/2"] and ef.items[0].short_answer is None
    assert ef.items[1].messages == [{"role": "system", "content": "You are helpful."},
                                    {"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"},
                                    {"role": "user", "content": "and times 3?"}]
    assert ef.notes["turns without a reference answer: not scored (dianjing judge grades them)"] == 1


def test_the_metric_is_detected_and_said_or_asked_for():
    short = type("F", (), {"path": "f", "items": [EvalItem("1", "", [], "Paris")] * 3})()
    long = type("F", (), {"path": "f", "items": [EvalItem("1", "", [], "word " * 30)] * 3})()
    metric, why = choose_metric(short, "auto")
    assert metric == "f1" and "median 1 answer tokens" in why
    assert choose_metric(long, "auto")[0] == "rouge_l"
    assert choose_metric(long, "contains") == ("contains", "--metric")
    keyed = type("F", (), {"path": "f", "items": [EvalItem("1", "", [], "word " * 30, short_answer="w")] * 3})()
    metric, why = choose_metric(keyed, "auto")
    assert metric == "contains" and "3 of 3 items have a short answer" in why
    with pytest.raises(ConfigError, match="--metric accuracy: f has no record with options"):
        choose_metric(short, "accuracy")
