"""The data flow up to the trainer: sources, built-in corpora, corpus build, tokenizer, shards, sampler.

Owns `data/<profile>/` (raw corpus, held-out split, pretokenized shards) and `tokenizers/`.
May import the core (`engine.errors`, `engine.atomic`, `engine.profile`, `engine.workspace`,
`engine.mix`, `engine.model.config`); never the model, jobs, eval, train or export packages.
Importing this package imports neither torch nor sentencepiece.
"""
