"""infer/api.py: the checks a request passes before the batcher."""

import pytest

from dianjing.infer.api import ApiError, ChatRequest, Limits, chat_job


class _Template:
    stop_strings = ()

    def render(self, messages, add_generation_prompt=True):
        raise TypeError("'NoneType' object is not subscriptable")  # a model's own template, broken


class _Served:
    name, template, tokenizer, eos = "m", _Template(), None, {0}


def test_a_template_that_fails_oddly_is_a_400_without_its_internals():
    req = ChatRequest.model_validate({"messages": [{"role": "user", "content": "hi"}]})
    with pytest.raises(ApiError) as e:
        chat_job(req, _Served(), 256, Limits())
    assert e.value.status == 400 and e.value.param == "messages"
    assert "NoneType" not in e.value.message and "TypeError" not in e.value.message
