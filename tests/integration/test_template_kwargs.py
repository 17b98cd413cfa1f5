"""data.template_kwargs end to end: a run on a tiny model whose own template reads an option and carries
{% generation %} marks pins the option with the template, and `dianjing chat`'s loader renders with it."""

import json

import yaml

from dianjing.infer.generate import prompt_ids
from dianjing.infer.load import load_run
from dianjing.train.loop import train
from tests.helpers import sft_config
from tests.tiny import build_model

TURN = "<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
TEMPLATE = ("{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}" + TURN + "{% endgeneration %}"
            "{% else %}" + TURN + "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
            "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}"
            "{% endif %}")


def test_template_kwargs_are_pinned_in_the_run_and_used_by_chat(tmp_path, alpaca_file):
    model = build_model(tmp_path / "model", chat_template=TEMPLATE)
    cfg = sft_config(model, alpaca_file, tmp_path / "run", "train.max_steps=1",
                     "data.template_kwargs.enable_thinking=false")
    lines: list[str] = []
    run_dir, _ = train(cfg, log=lambda *a: lines.append(" ".join(map(str, a))))
    log = "\n".join(lines)
    assert "the model's own chat template with enable_thinking=False" in log
    assert "the generation prompt pre-fills `<think>\\n\\n</think>\\n\\n`" in log  # the diagnosis, once
    assert json.loads((run_dir / "template.json").read_text())["kwargs"] == {"enable_thinking": False}
    pinned = yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["template_kwargs"]
    assert pinned == {"enable_thinking": False}
    _, tok, template = load_run(run_dir, log=lambda *_: None)
    ids = prompt_ids(tok, template, [{"role": "user", "content": "Say the number 3."}])
    assert tok.decode(ids).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
