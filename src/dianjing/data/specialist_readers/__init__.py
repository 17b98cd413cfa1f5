"""Readers for the specialist tasks (classify, pair, tag, extract-qa): files → examples.

Every record that cannot be used is either an error naming its file, line (or record) and
field (on_error="stop"), or is counted by reason in a ReadReport (on_error="skip"); both go
through data.bad_records, as for the other readers. Every repair made by a stated rule (an I-
tag that starts an entity becomes B-, an answer offset that misses its text is moved to the
nearest occurrence, ...) is always applied and always counted in report.fixed, never silently.

Modules, one per format:
  classify       classify, pair: CSV/TSV with a header, JSON list, JSONL, Parquet (data.readers)
  tagging        tag: CoNLL-style columns, or records with tokens and tags; BIO checks and repair
  extractive_qa  extract-qa: SQuAD v1.1 JSON (DRCD), or records in the Hugging Face "squad" layout
  common         example types, ReadReport, positions, the Checker every rejection goes through
  read           read_task, check_labels, check_tags, label_list
"""

from dianjing.data.specialist_readers.classify import (EMPTY_TEXT, FIX_LABEL_SPACE, LABEL_FIELDS,
                                                       LABEL_NOT_SINGLE, MISSING_LABEL, PAIR_FIELDS, TEXT_FIELDS,
                                                       TEXT_NOT_TEXT)
from dianjing.data.specialist_readers.common import (NOT_OBJECT, UNREADABLE, QAExample, ReadReport, TagExample,
                                                     TextExample)
from dianjing.data.specialist_readers.extractive_qa import (BAD_ANSWERS, BAD_SQUAD, EMPTY_CONTEXT, EMPTY_QUESTION,
                                                            FIX_DROP_EMPTY, FIX_DROP_NOT_FOUND, FIX_DUP_ID, FIX_ID,
                                                            FIX_OFFSET, NO_ANSWER, NOT_FOUND)
from dianjing.data.specialist_readers.read import (RECORD_SUFFIXES, TASKS, check_labels, check_tags, label_list,
                                                   read_task)
from dianjing.data.specialist_readers.tagging import (EMPTY_SENTENCE, FIX_BIO, LENGTH_MISMATCH, MISSING_TAGS, NO_TAG,
                                                      NOT_BIO, NOT_UTF8, TAG_FIELDS, TAGS_NOT_LIST, TOKEN_FIELDS,
                                                      TOKENS_NOT_LIST)

__all__ = [
    "read_task", "check_labels", "check_tags", "label_list", "TASKS", "RECORD_SUFFIXES",
    "TextExample", "TagExample", "QAExample", "ReadReport",
    "TEXT_FIELDS", "LABEL_FIELDS", "PAIR_FIELDS", "TOKEN_FIELDS", "TAG_FIELDS",
    "NOT_OBJECT", "UNREADABLE", "EMPTY_TEXT", "TEXT_NOT_TEXT", "MISSING_LABEL", "LABEL_NOT_SINGLE",
    "NO_TAG", "NOT_UTF8", "LENGTH_MISMATCH", "NOT_BIO", "EMPTY_SENTENCE", "TOKENS_NOT_LIST", "TAGS_NOT_LIST",
    "MISSING_TAGS", "EMPTY_QUESTION", "EMPTY_CONTEXT", "NO_ANSWER", "NOT_FOUND", "BAD_ANSWERS", "BAD_SQUAD",
    "FIX_LABEL_SPACE", "FIX_BIO", "FIX_OFFSET", "FIX_DROP_NOT_FOUND", "FIX_DROP_EMPTY", "FIX_ID", "FIX_DUP_ID",
]
