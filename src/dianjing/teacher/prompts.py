"""Prompts for each stage and the parsers of the teacher's replies (written for dianjing).

Every prompt works for a chat endpoint (sent as one user message, ending with a line that
says how to answer) and for a completions endpoint (the text ends where the teacher should
continue, e.g. "Task 9:"; the parser puts that marker back in front of the reply). A parser
returns None when the reply has none of the structure asked for: the pipeline counts it as
an unparseable reply.
"""

from __future__ import annotations

import re

from dianjing.teacher.seeds import SeedTask

NONE_MARK = "<none>"
_NONE_WORDS = {"", "<none>", "none", "(none)", "n/a", "無", "无", "<無>", "（無）", "(無)"}


def _clean(text: str) -> str:
    return text.strip().strip("#").strip()


def _none_to_empty(text: str) -> str:
    return "" if _clean(text).lower() in _NONE_WORDS else _clean(text)


# --- (1) new instructions ---------------------------------------------------------------------

_TASK = re.compile(r"^[ \t]*(?:\*\*)?(?:Task|任務)[ \t]*(\d+)[ \t]*(?:\*\*)?[ \t]*[:：.][ \t]*", re.M | re.I)


def instructions_prompt(examples: list[str], n_new: int, api: str) -> str:
    k = len(examples) + 1
    head = (
        "You are helping to build a varied set of tasks for training an AI assistant that only reads and writes "
        f"text. Below are {len(examples)} example tasks. Write {n_new} new tasks, numbered from {k} to "
        f"{k + n_new - 1}, each as \"Task N: <instruction>\".\n"
        "- Each task is one instruction a person could give the assistant; it may refer to an input (a sentence, "
        "a list, a paragraph, a table, code) that is given to the assistant with it.\n"
        "- Make each task different from the examples and from the others: vary the verb, the topic and the "
        "kind of task (open question, classification, rewriting, reasoning, extraction, brainstorming, coding, "
        "writing, advice).\n"
        "- Write some tasks in English and some in Traditional Chinese (繁體中文).\n"
        "- The assistant cannot see, hear, draw or browse: do not ask for images, audio, files or websites.\n\n")
    body = "".join(f"Task {i}: {e}\n" for i, e in enumerate(examples, 1))
    if api == "chat":
        return head + body + f"\nReply with Task {k} to Task {k + n_new - 1} only, one per line."
    return head + body + f"Task {k}:"


def parse_instructions(reply: str, first: int, api: str, cut_off: bool) -> tuple[list[str], str | None] | None:
    """The new instructions, and the last one if the reply was cut off at max_tokens (it is dropped)."""
    text = reply if api == "chat" else f"Task {first}: {reply}"
    marks = list(_TASK.finditer(text))
    if not marks:
        return None
    found = []
    for a, b in zip(marks, marks[1:] + [None]):
        found.append(" ".join(_clean(text[a.end(): b.start() if b else len(text)]).split()))
    last = found.pop() if cut_off and found else None
    return found, last


# --- classification check ---------------------------------------------------------------------

def classify_prompt(instruction: str, examples: list[SeedTask], api: str) -> str:
    head = ("Is each task a classification task, whose answer is one label from a small, fixed set (for example "
            "yes/no, positive/negative, or one of a few categories)?\n\n")
    body = "".join(f"Task: {e.instruction}\nClassification: {'Yes' if e.is_classification else 'No'}\n\n"
                   for e in examples)
    tail = f"Task: {instruction}\nClassification:"
    if api == "chat":
        tail += "\n\nAnswer with Yes or No only."
    return head + body + tail


def parse_yes_no(reply: str) -> bool | None:
    s = reply.strip().lstrip("*#\"' ").lower()
    s = re.sub(r"^(classification|answer)\s*[:：]\s*", "", s).lstrip("*\"' ")
    if s.startswith(("yes", "true", "是")):
        return True
    if s.startswith(("no", "false", "否", "不")):
        return False
    return None


# --- (2) inputs: input-first, or labels and inputs: output-first ------------------------------

_INPUT = re.compile(r"^[ \t]*(?:\*\*)?Input[ \t]*(\d+)[ \t]*(?:\*\*)?[ \t]*[:：][ \t]*", re.M | re.I)
_PAIR = re.compile(r"^[ \t]*(?:\*\*)?(Label|Input)[ \t]*(?:\*\*)?[ \t]*[:：][ \t]*", re.M | re.I)


def _demo_input(inp: str) -> str:
    return inp.strip() or NONE_MARK


def inputs_prompt(instruction: str, demos: list[SeedTask], n: int, api: str) -> str:
    head = (f"Write up to {n} different, realistic inputs for the task, as \"Input 1: …\", \"Input 2: …\". An input "
            "is what a user would give together with the instruction (a sentence, a paragraph, a list, code, a "
            f"question). If the instruction is complete without an input, write only \"Input 1: {NONE_MARK}\". "
            "Write the inputs in the language of the task.\n\n")
    body = "".join(f"Task: {d.instruction}\n"
                   + "".join(f"Input {i}: {_demo_input(x)}\n" for i, (x, _) in enumerate(d.instances, 1)) + "\n"
                   for d in demos)
    tail = f"Task: {instruction}\n"
    return head + body + (tail + "\nReply with the inputs only." if api == "chat" else tail + "Input 1:")


def parse_inputs(reply: str, api: str) -> list[str] | None:
    text = reply if api == "chat" else f"Input 1: {reply}"
    marks = list(_INPUT.finditer(text))
    if not marks:
        return None
    return [_none_to_empty(text[a.end(): b.start() if b else len(text)])
            for a, b in zip(marks, marks[1:] + [None])]


def labels_prompt(instruction: str, demos: list[SeedTask], api: str) -> str:
    head = ("The task below is a classification task. First decide on its possible class labels; then, for each "
            "label, write an input that belongs to that label, as \"Label: …\" followed by \"Input: …\". Write "
            "them in the language of the task.\n\n")
    body = "".join(f"Task: {d.instruction}\n"
                   + "".join(f"Label: {y.strip()}\nInput: {_demo_input(x)}\n" for x, y in d.instances) + "\n"
                   for d in demos)
    tail = f"Task: {instruction}\n"
    return head + body + (tail + "\nReply with the labels and inputs only." if api == "chat" else tail + "Label:")


def parse_labelled(reply: str, api: str) -> list[tuple[str, str]] | None:
    """(input, label) pairs: output first, then an input written for it."""
    text = reply if api == "chat" else f"Label: {reply}"
    marks = list(_PAIR.finditer(text))
    pairs, label = [], None
    for a, b in zip(marks, marks[1:] + [None]):
        value = text[a.end(): b.start() if b else len(text)]
        if a.group(1).lower() == "label":
            label = _clean(value)
        elif label is not None:
            pairs.append((_none_to_empty(value), label))
            label = None
    return pairs or None


# --- (3) outputs ------------------------------------------------------------------------------

def output_prompt(instruction: str, inp: str, api: str) -> str:
    """Chat: the user turn exactly as `dianjing train` renders an alpaca record; completions: Alpaca's layout."""
    if api == "chat":
        return f"{instruction}\n\n{inp}" if inp.strip() else instruction
    if inp.strip():
        return f"### Instruction:\n{instruction}\n\n### Input:\n{inp}\n\n### Response:\n"
    return f"### Instruction:\n{instruction}\n\n### Response:\n"


# --- one-shot (Alpaca-style): whole tasks in one request ---------------------------------------

_FIELD = re.compile(r"^[ \t]*(?:\*\*)?(Instruction|Input|Output)[ \t]*(?:\*\*)?[ \t]*[:：][ \t]*", re.M | re.I)


def oneshot_prompt(demos: list[SeedTask], n: int, api: str) -> str:
    head = (
        f"Write {n} varied tasks for training an AI assistant that only reads and writes text. For each task give "
        f"an instruction, an input ({NONE_MARK} when the instruction needs none) and a good, complete output.\n"
        "- Vary the verbs, the topics and the kinds of task (open question, classification, rewriting, "
        "reasoning, extraction, brainstorming, coding, writing, advice); do not repeat the examples.\n"
        "- Write some tasks in English and some in Traditional Chinese (繁體中文).\n"
        "- The assistant cannot see, hear, draw or browse: no images, audio, files or websites.\n"
        "Separate the tasks with a line \"###\", in this format:\n\n")
    body = "".join(f"###\nInstruction: {d.instruction}\nInput: {_demo_input(d.instances[0][0])}\n"
                   f"Output: {d.instances[0][1].strip()}\n" for d in demos)
    tail = "###\n" if api != "chat" else f"\nReply with the {n} new tasks only, each after a \"###\" line."
    return head + body + tail


def parse_oneshot(reply: str, api: str) -> list[dict | None] | None:
    """One dict {instruction, input, output} per block, or None for a block without all three."""
    blocks = [b for b in re.split(r"^[ \t]*#{3,}[ \t]*$", reply, flags=re.M) if b.strip()]
    out: list[dict | None] = []
    for block in blocks:
        fields: dict[str, str] = {}
        marks = list(_FIELD.finditer(block))
        for a, b in zip(marks, marks[1:] + [None]):
            fields.setdefault(a.group(1).lower(), block[a.end(): b.start() if b else len(block)])
        if "instruction" in fields and "output" in fields:
            out.append({"instruction": " ".join(_clean(fields["instruction"]).split()),
                        "input": _none_to_empty(fields.get("input", "")), "output": fields["output"].strip()})
        else:
            out.append(None)
    return out or None
