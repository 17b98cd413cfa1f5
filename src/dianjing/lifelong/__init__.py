"""Lifelong (continual) learning: tasks learned one after another through the one training loop.

`dianjing train --continual SEQUENCE.yaml` reads a sequence file (`sequence.py`), reads and checks
every task's data before any training (`tasks.py`), then runs one stage per task (`driver.py`):
each stage is an ordinary run of `train/loop.py` whose Setup comes from `route.py`, starting from
the previous stage's weights. LAMOL (Sun, Ho and Lee 2019) casts every task as question answering
and also trains the model to generate whole examples of its tasks (`examples.py`); before each new
task it generates pseudo-examples of the earlier ones and replays them (`pseudo.py`). After each
stage every task seen so far is scored (`evaluate.py`), and the run ends with the accuracy matrix,
forgetting and backward transfer (`results.py`).
"""
