"""Teacher: self-instruct data generation with filters, ROUGE-L de-duplication and provenance.

settings.py  the synth config (YAML + --set)         seeds.py    seed tasks (self-instruct format)
client.py    OpenAI-compatible HTTP / local teacher   prompts.py  prompts and reply parsers
filters.py   rejection reasons, one small function    dedup.py    exact ROUGE-L de-duplication at scale
store.py     request journal and commit ledger         pipeline.py the stages over a work folder
report.py    report.json
"""
