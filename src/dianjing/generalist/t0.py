"""The rendered T0 training data (one `<dataset>_<template>.jsonl` per dataset × template, records
{prompt, completion}) as a registry with task clusters.

Each file is one task: the dataset is its `dataset` id (so every template of a held-out dataset
is held out together) and the file's template name is its one template, `{{ prompt }}` →
`{{ completion }}` (the trailing `<|endoftext|>` is stripped when the file is read).

Clusters follow the T0 paper's task taxonomy (Sanh et al. 2021, fig. 2):

    sentiment           amazon_polarity, app_reviews, imdb, rotten_tomatoes, yelp_review_full
    topic               ag_news, dbpedia_14, trec
    paraphrase          glue_mrpc, glue_qqp, paws
    extractive_qa       adversarial_qa, duorc, quoref, ropes
    multiple_choice_qa  commonsense_qa, cosmos_qa, dream, qasc, quarel, quartz, sciq, social_i_qa,
                        wiki_hop, wiqa
    closed_book_qa      hotpotqa (kilt_tasks), wiki_qa
    summarisation       cnn_dailymail, gigaword, multi_news, samsum, xsum
    structure_to_text   common_gen, wiki_bio

(The files hold no sentence-completion or NLI data: T0 kept those clusters for evaluation.)
A file whose dataset is not in this table goes to cluster `unmapped` as its own dataset, and
the import says so.

Answer options, for option ranking and the OPTIONS suffix: the distinct completions of the file
when they are few (2–10, and each answer occurring four times on average, so a small file of
free-text answers is not mistaken for a classification task). The files hold the first ~200
rows of each dataset, which for some is one label only (every imdb row is negative, every
rotten_tomatoes row positive, every dbpedia_14 row "Company"): then the answers of the same
template in the other datasets of the cluster are added (imdb and rotten_tomatoes share their
templates), and where that is not enough, KNOWN_OPTIONS lists the answer words the prompt itself
states (dbpedia_14's fourteen categories, ag_news's four sections).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from dianjing.generalist.registry import T0_PREFIX, Registry, Task, Template

EOT = "<|endoftext|>"

# file-name prefix -> dataset id; longest prefix wins
DATASETS = {
    "adversarial_qa_dbert": "adversarial_qa", "adversarial_qa_dbidaf": "adversarial_qa",
    "adversarial_qa_droberta": "adversarial_qa", "ag_news": "ag_news", "amazon_polarity": "amazon_polarity",
    "app_reviews": "app_reviews", "cnn_dailymail_3_0_0": "cnn_dailymail", "common_gen": "common_gen",
    "commonsense_qa": "commonsense_qa", "cosmos_qa": "cosmos_qa", "dbpedia_14": "dbpedia_14", "dream": "dream",
    "duorc_ParaphraseRC": "duorc", "duorc_SelfRC": "duorc", "gigaword": "gigaword", "glue_mrpc": "glue_mrpc",
    "glue_qqp": "glue_qqp", "imdb": "imdb", "kilt_tasks_hotpotqa": "hotpotqa", "multi_news": "multi_news",
    "paws_labeled_final": "paws", "qasc": "qasc", "quarel": "quarel", "quartz": "quartz", "quoref": "quoref",
    "ropes": "ropes", "rotten_tomatoes": "rotten_tomatoes", "samsum": "samsum", "sciq": "sciq",
    "social_i_qa": "social_i_qa", "trec": "trec", "wiki_bio": "wiki_bio", "wiki_hop_original": "wiki_hop",
    "wiki_qa": "wiki_qa", "wiqa": "wiqa", "xsum": "xsum", "yelp_review_full": "yelp_review_full",
}

CLUSTERS = {
    "sentiment": ["amazon_polarity", "app_reviews", "imdb", "rotten_tomatoes", "yelp_review_full"],
    "topic": ["ag_news", "dbpedia_14", "trec"],
    "paraphrase": ["glue_mrpc", "glue_qqp", "paws"],
    "extractive_qa": ["adversarial_qa", "duorc", "quoref", "ropes"],
    "multiple_choice_qa": ["commonsense_qa", "cosmos_qa", "dream", "qasc", "quarel", "quartz", "sciq",
                           "social_i_qa", "wiki_hop", "wiqa"],
    "closed_book_qa": ["hotpotqa", "wiki_qa"],
    "summarisation": ["cnn_dailymail", "gigaword", "multi_news", "samsum", "xsum"],
    "structure_to_text": ["common_gen", "wiki_bio"],
}
CLUSTER_OF = {d: c for c, ds in CLUSTERS.items() for d in ds}

# metric for free-text answers, by cluster
GENERATIVE_METRIC = {"extractive_qa": "squad_f1", "multiple_choice_qa": "squad_f1", "closed_book_qa": "squad_f1",
                     "summarisation": "rouge_l", "structure_to_text": "rouge_l"}

# templates that ask for the input given the output (FLAN's "turned around"), by (dataset, template)
TURNED_AROUND = {
    ("adversarial_qa", "generate_question"), ("app_reviews", "generate_review"),
    ("cnn_dailymail", "generate_story"), ("cnn_dailymail", "spice_up_story"),
    ("common_gen", "sentence_to_concepts"), ("common_gen", "topics_from_the_sentence"),
    ("cosmos_qa", "context_answer_to_question"), ("dream", "generate_first_utterance"),
    ("duorc", "build_story_around_qa"), ("duorc", "generate_question"), ("duorc", "generate_question_by_answer"),
    ("gigaword", "reverse_writing"), ("gigaword", "write_an_article"), ("multi_news", "expand_reverse_task_"),
    ("samsum", "Write_a_dialogue_that_match_this_summary"), ("social_i_qa", "Generate_the_question_from_the_answer"),
    ("wiki_qa", "Generate_Question_from_Topic"), ("wiki_qa", "Jeopardy_style"),
}

_AG_SECTIONS = ["World politics", "Sports", "Business", "Science and technology"]
_AG_NEWS = ["World News", "Sports", "Business", "Science and Technology"]
_DBPEDIA = ["Company", "Educational Institution", "Artist", "Athlete", "Office Holder", "Mean Of Transportation",
            "Building", "Natural Place", "Village", "Animal", "Plant", "Album", "Film", "Written Work"]
# answer words stated in the prompts, for templates whose ~200 rows do not show them all
KNOWN_OPTIONS = {
    ("ag_news", "classify"): _AG_SECTIONS, ("ag_news", "classify_question_first"): _AG_SECTIONS,
    ("ag_news", "classify_with_choices"): _AG_SECTIONS,
    ("ag_news", "classify_with_choices_question_first"): _AG_SECTIONS,
    ("ag_news", "recommend"): ["Politician", "Athlete", "Business executive", "Scientist"],
    ("ag_news", "which_section"): _AG_NEWS, ("ag_news", "which_section_choices"): _AG_NEWS,
    ("dbpedia_14", "given_a_choice_of_categories_"): _DBPEDIA,
    ("dbpedia_14", "given_a_list_of_category_what_does_the_title_belong_to"): _DBPEDIA,
    ("dbpedia_14", "given_list_what_category_does_the_paragraph_belong_to"): _DBPEDIA,
    ("dbpedia_14", "pick_one_category_for_the_following_text"): _DBPEDIA,
    ("imdb", "Negation_template_for_positive_and_negative"): ["negative review.", "positive review."],
}
MAX_OPTIONS = 10


def split_name(stem: str) -> tuple[str, str, str]:
    """File stem → (dataset id, subset prefix, template name); unknown datasets → (stem, stem, stem)."""
    for prefix in sorted(DATASETS, key=len, reverse=True):
        if stem.startswith(prefix + "_"):
            return DATASETS[prefix], prefix, stem[len(prefix) + 1:]
    return stem, stem, stem


def read_t0(path: Path, on_error: str = "stop", errors: list | None = None) -> Iterator:
    """The records of one T0 file with `<|endoftext|>` removed from the completion."""
    from dianjing.data.readers import read_jsonl

    if not path.is_file():
        from dianjing.errors import ConfigError

        raise ConfigError(f"T0 file {path} does not exist", fix="check t0_dir and the t0:<file stem> source")
    for rec in read_jsonl(path, on_error, errors):
        if isinstance(rec.data, dict) and isinstance(rec.data.get("completion"), str):
            rec.data["completion"] = rec.data["completion"].replace(EOT, "").strip()
        yield rec


def _completions(path: Path) -> tuple[int, list[str]]:
    rows, outs = 0, []
    for rec in read_t0(path, on_error="skip", errors=[]):
        rows += 1
        c = rec.data.get("completion") if isinstance(rec.data, dict) else None
        if isinstance(c, str) and c:
            outs.append(c)
    return rows, outs


def build_registry(folder: str | Path, log=print) -> Registry:
    """A registry with one task per T0 file (dataset × template), clustered as in CLUSTERS."""
    folder = Path(folder)
    files = sorted(folder.glob("*.jsonl"))
    if not files:
        from dianjing.errors import ConfigError

        raise ConfigError(f"no .jsonl files in the T0 folder {folder}")
    info = {}
    skipped, unmapped = [], set()
    for f in files:
        rows, outs = _completions(f)
        if not outs:
            skipped.append(f"{f.stem} ({'empty file' if not rows else 'every completion is empty'})")
            continue
        ds, _, tmpl = split_name(f.stem)
        cluster = CLUSTER_OF.get(ds, "unmapped")
        if cluster == "unmapped":
            unmapped.add(f.stem)
        info[f.stem] = (ds, tmpl, cluster, len(outs), set(outs))
    # answers of the same template name across the datasets of one cluster (imdb ~ rotten_tomatoes)
    by_template: dict[tuple[str, str], set] = defaultdict(set)
    for ds, tmpl, cluster, _, outs in info.values():
        by_template[(cluster, tmpl)] |= outs
    tasks = []
    for stem, (ds, tmpl, cluster, n, outs) in info.items():
        turned = (ds, tmpl) in TURNED_AROUND
        options = None
        if not turned:
            if (ds, tmpl) in KNOWN_OPTIONS:
                options = list(KNOWN_OPTIONS[(ds, tmpl)])
            elif 2 <= len(outs) <= MAX_OPTIONS and len(outs) * 4 <= n:
                options = sorted(outs)
            elif len(outs) == 1:
                pooled = by_template[(cluster, tmpl)]
                if 2 <= len(pooled) <= MAX_OPTIONS:
                    options = sorted(pooled)
            if options is not None and not outs <= set(options):
                options = None  # an answer outside the list: score it as free text
        metric = "accuracy" if options else ("rouge_l" if turned else GENERATIVE_METRIC.get(cluster, "exact_match"))
        tasks.append(Task(name=stem, dataset=ds, source=T0_PREFIX + stem, cluster=cluster, metric=metric,
                          options=options,
                          templates=[Template(name=tmpl, input="{{ prompt }}", target="{{ completion }}",
                                              turned_around=turned)]))
    if skipped:
        log(f"T0 import: skipped {len(skipped)} files with nothing to learn: " + ", ".join(skipped[:4])
            + (f" and {len(skipped) - 4} more" if len(skipped) > 4 else ""))
    if unmapped:
        log(f"T0 import: {len(unmapped)} files of datasets without a cluster went to 'unmapped': "
            + ", ".join(sorted(unmapped)[:10]))
    reg = Registry(t0_dir=str(folder.resolve()), tasks=tasks)
    reg._base_dir, reg._origin = folder.resolve(), f"t0:{folder}"
    return reg
