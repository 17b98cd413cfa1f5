"""Prompts carry what the parsers need back; parsers take chat and completions replies and say None to garbage."""

from dianjing.teacher import prompts as P
from dianjing.teacher.seeds import load_seeds

SEEDS = load_seeds()


def test_instruction_prompt_and_parser_for_both_apis():
    examples = ["Write a poem.", "翻譯這句話。"]
    chat = P.instructions_prompt(examples, 3, "chat")
    assert "Task 1: Write a poem.\nTask 2: 翻譯這句話。" in chat and chat.endswith("Task 3 to Task 5 only, one per line.")
    assert P.instructions_prompt(examples, 3, "completions").endswith("Task 3:")
    reply = "Task 3: Explain tides.\n**Task 4**: 請解釋潮汐\n  的成因。\nTask 5. List five rivers in Asia."
    assert P.parse_instructions(reply, 3, "chat", False) == (
        ["Explain tides.", "請解釋潮汐 的成因。", "List five rivers in Asia."], None)
    assert P.parse_instructions(" Explain tides.\nTask 4: Name two", 3, "completions", True) == (
        ["Explain tides."], "Name two")
    assert P.parse_instructions("I'm sorry, I can't do that.", 3, "chat", False) is None
    assert P.parse_instructions("", 3, "chat", False) is None


def test_yes_no():
    for text, want in [("Yes", True), (" yes.", True), ("**Yes**", True), ("Classification: No", False),
                       ("是", True), ("否", False), ("不是分類任務", False), ("maybe", None), ("", None)]:
        assert P.parse_yes_no(text) is want, text


def test_classify_prompt_shows_labelled_examples():
    demos = [s for s in SEEDS if s.is_classification][:2] + [s for s in SEEDS if not s.is_classification][:2]
    text = P.classify_prompt("Sort these words.", demos, "chat")
    assert text.count("Classification: Yes") == 2 and text.count("Classification: No") == 2
    assert "Task: Sort these words.\nClassification:" in text


def test_inputs_input_first():
    demos = SEEDS[:2]
    text = P.inputs_prompt("Summarize the text.", demos, 3, "completions")
    assert text.endswith("Task: Summarize the text.\nInput 1:")
    assert P.parse_inputs("Input 1: a long text\nwith two lines\nInput 2: <none>\nInput 3: 無", "chat") == [
        "a long text\nwith two lines", "", ""]
    assert P.parse_inputs(" first\nInput 2: second", "completions") == ["first", "second"]
    assert P.parse_inputs("Sure, here are some inputs!", "chat") is None


def test_labels_output_first():
    demos = [s for s in SEEDS if s.is_classification][:2]
    text = P.labels_prompt("Is the review positive?", demos, "chat")
    assert "Label: " in text and "Input: " in text
    reply = "Label: positive\nInput: Loved it.\nLabel: negative\nInput: 難吃。\nLabel: orphan"
    assert P.parse_labelled(reply, "chat") == [("Loved it.", "positive"), ("難吃。", "negative")]
    assert P.parse_labelled(" positive\nInput: Great.", "completions") == [("Great.", "positive")]
    assert P.parse_labelled("no structure here", "chat") is None


def test_output_prompt_is_the_training_user_turn():
    assert P.output_prompt("Translate.", "你好", "chat") == "Translate.\n\n你好"
    assert P.output_prompt("Tell a joke.", "", "chat") == "Tell a joke."
    assert P.output_prompt("Translate.", "你好", "completions").endswith("### Input:\n你好\n\n### Response:\n")


def test_oneshot_blocks():
    text = P.oneshot_prompt(SEEDS[:3], 5, "chat")
    assert text.count("###\nInstruction: ") == 3
    reply = ("###\nInstruction: Name a color.\nInput: <none>\nOutput: Blue.\n###\n"
             "Instruction: 翻譯\nInput: hello\nOutput: 你好\n第二行\n###\nOutput: missing instruction\n")
    assert P.parse_oneshot(reply, "chat") == [
        {"instruction": "Name a color.", "input": "", "output": "Blue."},
        {"instruction": "翻譯", "input": "hello", "output": "你好\n第二行"}, None]
    assert P.parse_oneshot("   ", "chat") is None
