"""Evaluation: text normalisation and tokens (`text`) and the metrics built on them (`metrics`), defined once
for every route (the teacher's ROUGE-L de-duplication, the generalist's held-out scoring, the specialists'
EM/F1, accuracy and entity F1, chat eval); chat runs scored on files with references (`items`, `runner`,
`likelihood`, `chat`); LLM-as-judge on question sets (`questions`, `answers`, `judge_prompts`,
`judge_stats`, `judge`); the cost of a run (`cost`).

Importing this package imports nothing heavy: torch is imported by the functions that run a model.
"""
