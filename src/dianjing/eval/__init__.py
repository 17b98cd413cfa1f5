"""Evaluation: text normalisation and tokens (`text`) and the metrics built on them (`metrics`).

One definition of each, shared by every route: the teacher's ROUGE-L de-duplication, the
generalist's held-out scoring and the specialist heads' EM/F1, accuracy and entity F1.
Pure Python; importing this package imports nothing heavy.
"""
