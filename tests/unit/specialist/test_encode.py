"""Framing, word alignment and QA windows, for a WordPiece encoder and a byte-level BPE decoder tokenizer."""

from __future__ import annotations

import pytest

from dianjing.models.load import load_tokenizer
from dianjing.data.specialist_readers import QAExample, TagExample, TextExample
from dianjing.specialist.encode import IGNORE, EncodeStats, Encoder
from tests.tiny import build_bert, build_tokenizer


@pytest.fixture(scope="module", params=["bert", "bpe"])
def tok(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    if request.param == "bert":
        build_bert(d)
    else:
        build_tokenizer(d)
    return load_tokenizer(str(d), log=lambda *_: None)


def test_frames(tok):
    enc = Encoder(tok, 64, use_token_types=True)
    f = enc.encode_text([TextExample("x:1", "good film", "paris", "pos")], {"pos": 0}, EncodeStats())[0]
    a, b = enc.ids("good film"), enc.ids("paris")
    if enc.encoder_style:
        assert f.input_ids == [tok.cls_token_id, *a, tok.sep_token_id, *b, tok.sep_token_id]
        assert f.token_type_ids == [0] * (len(a) + 2) + [1] * (len(b) + 1)
    else:
        assert f.input_ids == [tok.bos_token_id, *a, *enc.ids("\n"), *b, tok.eos_token_id]
        assert f.token_type_ids is None
    assert f.label == 0


def test_truncation_longest_first_is_counted(tok):
    enc = Encoder(tok, 24, use_token_types=False)
    stats = EncodeStats()
    long = " ".join(["good"] * 30)
    f = enc.encode_text([TextExample("x:1", long, "paris film", None)], None, stats)[0]
    b = enc.ids("paris film")
    assert len(f.input_ids) == 24 and stats.truncated == 1
    assert f.input_ids[-(len(b) + len(enc.suffix)):] == b + enc.suffix  # the short text is kept whole


def test_tag_labels_sit_on_each_words_first_token(tok):
    enc = Encoder(tok, 64, use_token_types=False)
    words = ["Paris", "is", "the", "capital", "of", "France", "🙂"]
    tags = ["B-loc", "O", "O", "O", "O", "B-loc", "O"]
    ids = {"O": 0, "B-loc": 1, "I-loc": 2}
    f = enc.encode_tags([TagExample("x:1", words, tags)], ids, EncodeStats())[0]
    firsts = [(pos, w) for pos, w in enumerate(f.word_index) if w >= 0]
    assert [w for _, w in firsts] == list(range(len(words)))  # every word has exactly one first token
    assert [f.labels[pos] for pos, _ in firsts] == [ids[t] for t in tags]
    assert all(l == IGNORE for pos, l in enumerate(f.labels) if f.word_index[pos] < 0)
    # decoding from each first token to the next word's first token gives the word back
    bounds = [pos for pos, _ in firsts] + [len(f.input_ids) - 1]
    for k, w in enumerate(words):
        text = tok.decode(f.input_ids[bounds[k]:bounds[k + 1]]).strip()
        assert text.lower() == w.lower() or (w == "🙂" and text in ("🙂", "[UNK]"))


def test_tag_words_past_max_length_are_counted(tok):
    enc = Encoder(tok, 10, use_token_types=False)
    stats = EncodeStats()
    words = ["film"] * 20
    f = enc.encode_tags([TagExample("x:1", words, ["O"] * 20)], {"O": 0}, stats)[0]
    kept = sum(1 for w in f.word_index if w >= 0)
    assert len(f.input_ids) <= 10 and stats.words_cut == 20 - kept and stats.truncated == 1


def test_qa_windows_cover_the_context_with_overlap(tok):
    context = " ".join(f"w{i}" for i in range(80)) + " the capital is paris ."
    start = context.index("paris")
    ex = QAExample("x:1", "q1", "what is the capital ?", context, [("paris", start)])
    enc = Encoder(tok, 40, use_token_types=True)
    stats = EncodeStats()
    feats = enc.encode_qa([ex], stride=10, stats=stats, training=True)
    assert len(feats) > 1 and stats.truncated == 1
    spans = [[o for o in f.offsets if o is not None] for f in feats]
    assert spans[0][0][0] == 0 and spans[-1][-1][1] >= len(context) - 1  # all of the context is seen
    for a, b in zip(spans, spans[1:]):
        assert b[0][0] < a[-1][1]  # consecutive windows overlap
    labelled = [f for f in feats if f.start]
    assert labelled, "the answer is in some window"
    for f in labelled:
        s, e = f.offsets[f.start][0], f.offsets[f.end][1]
        assert context[s:e].strip() == "paris"
    assert all(len(f.input_ids) <= 40 for f in feats)
