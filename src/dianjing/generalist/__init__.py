"""The generalist route (FLAN / T0): many datasets, each phrased through many instruction templates,
mixed into one training file; evaluation on whole task clusters held out of training.

    registry.py   YAML task registries and mixtures (pydantic, extra="forbid")
    templates.py  Jinja2 sandboxed templates over record fields, options suffix, few-shot, CoT
    mix.py        task selection + held-out leak check, capped / temperature mixing, the report
    score.py      held-out scoring: option log-likelihood ranking, generated EM, ROUGE-L, EM/F1
    t0.py         the rendered T0 files as a registry with task clusters
"""
