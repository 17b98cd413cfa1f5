"""Tiny random models and a locally trained tokenizer, so tests never touch the network."""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "USER: What is the capital of France? AI: Paris is the capital of France.",
    "Translate to English: 你好，世界 → Hello, world. 我是點睛，一個 AI 助理。",
    "The quick brown fox jumps over the lazy dog. 1 + 2 = 3. Who are you? I am Dianjing.",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n",
    "### Instruction:\nSay hi.\n\n### Response:\nHi! ASSISTANT: USER: emoji 🙂 ok",
]


def build_tokenizer(folder: Path, *, pad: bool = True, chat_template: str | None = None, bos: bool = True,
                    bos_token: str = "<s>", eos_token: str = "</s>", specials: tuple[str, ...] = (),
                    added: tuple[str, ...] = ()):
    """The tiny byte-level BPE tokenizer. A model family's tokens (tests/unit/data/test_template_families.py):
    `bos_token`/`eos_token` name its own, `specials` are more special tokens (turn markers), `added` are
    added tokens that are not special (Qwen's and DeepSeek's <think>)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = list(dict.fromkeys(["<pad>", bos_token, eos_token, "<unk>", *specials]))
    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(CORPUS * 20, trainer)
    kw = dict(tokenizer_object=tk, eos_token=eos_token, unk_token="<unk>")
    if bos:
        kw["bos_token"] = bos_token
    if pad:
        kw["pad_token"] = "<pad>"
    tok = PreTrainedTokenizerFast(**kw)
    if added:
        tok.add_tokens(list(added), special_tokens=False)
    if chat_template:
        tok.chat_template = chat_template
    tok.save_pretrained(str(folder))
    return tok


def build_model(folder: Path, *, kind: str = "llama", pad: bool = True, chat_template: str | None = None,
                seed: int = 0) -> Path:
    """A 2-layer random causal LM (hidden 32) with its tokenizer, saved as an HF folder."""
    import torch
    from transformers import AutoModelForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(folder, pad=pad, chat_template=chat_template)
    common = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                  pad_token_id=tok.pad_token_id, initializer_range=0.2)
    # a larger init than the 0.02 default: with a frozen random output layer of norm ~0.1, LoRA
    # alone could not make any prediction confident and "the loss goes down" would be vacuous
    if kind == "llama":
        from transformers import LlamaConfig

        cfg = LlamaConfig(**common, tie_word_embeddings=False)
    elif kind == "gemma3":
        from transformers import Gemma3TextConfig

        cfg = Gemma3TextConfig(**common, head_dim=8, final_logit_softcapping=30.0, sliding_window=16,
                               tie_word_embeddings=True)
    else:
        raise ValueError(kind)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(str(folder))
    return folder


def build_bert(folder: Path, seed: int = 0) -> Path:
    """A 2-layer random BERT encoder (hidden 32) with a locally trained WordPiece tokenizer."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tk = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True, handle_chinese_chars=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials)
    tk.train_from_iterator(CORPUS * 20 + ["good great bad awful movie film plot paris london"] * 20, trainer)
    cls, sep = tk.token_to_id("[CLS]"), tk.token_to_id("[SEP]")
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                  sep_token="[SEP]", mask_token="[MASK]")
    tok.save_pretrained(str(folder))
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, max_position_embeddings=256, pad_token_id=tok.pad_token_id,
                     initializer_range=0.2)
    torch.manual_seed(seed)
    BertModel(cfg).save_pretrained(str(folder))
    return folder
