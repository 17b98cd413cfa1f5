"""Each filter returns its reason or None; Chinese is measured in characters."""

from dianjing.teacher import filters as F


def test_instruction_filters_give_one_reason_each():
    checks = F.instruction_filters(3, 20)
    cases = {
        "Write a haiku about the autumn rain.": None,
        "請寫一首關於秋天的短詩。": None,
        "": "empty",
        "   ": "empty",
        "- List three fruits.": "starts with punctuation",
        "「寫一首詩」": "starts with punctuation",
        "3 ways to cook rice.": "starts with a non-letter",
        "Hi there.": "too short (< 3 tokens)",
        "寫詩": "too short (< 3 tokens)",
        " ".join(["word"] * 21): "too long (> 20 tokens)",
        "Draw a cat.": "needs what a text model cannot serve (image, graph, file, draw, …)",
        "Describe this image in detail.": F.unservable("image"),
        "請描述這張圖片的內容。": F.unservable("圖片"),
        "Go to the website and summarize it.": F.unservable("go to"),
    }
    for text, want in cases.items():
        assert F.first_reason(text, checks) == want, text


def test_keywords_match_whole_english_words_only():
    assert F.unservable("Summarize the profile of a painter.") is None  # "file" inside a word
    assert F.unservable("Explain a graph in graph theory.") is not None
    assert F.unservable("Write a plan for the project.") is None  # 計畫-like words are not listed
    assert F.unservable("請擬定一個計畫。") is None
    assert F.unservable("Rate this recipe.", extra=("recipe",)) is not None
    assert F.unservable("評論這首歌。", extra=("歌",)) is not None


def test_instance_filters():
    checks = F.instance_filters(max_input_tokens=5, max_output_tokens=5)

    def run(i, o):
        return next((r for c in checks if (r := c(i, o))), None)

    assert run("a b", "c d") is None
    assert run("a b", "  ") == "empty output"
    assert run("Hello  World", "hello world") == "output equals input"
    assert run("", "") == "empty output"
    assert run("一二三四五六", "好") == "input too long"
    assert run("x", "一 二 三 四 五 六") == "output too long"


def test_conflicting_and_repeated_examples():
    got = F.conflicts([("good film", "positive"), ("bad film", "negative"), ("good  film", "negative"),
                       ("ok", "neutral"), ("ok", "neutral"), ("", "A"), ("", "A")])
    assert got == ["same input with conflicting outputs", None, "same input with conflicting outputs",
                   None, "duplicate example", None, "duplicate example"]
