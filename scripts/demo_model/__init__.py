"""The bundled demo model's pipeline: the corpus it learns from, its training, evaluation, card and
the choice of its training seed. Not part of the toolkit's packages: run it from the scripts in
``scripts/`` (``train_demo_model.py``, ``eval_demo_model.py``, ``select_demo_seed.py``), which find
this package beside them.

- ``corpus``: requests x phrasings, the held-out splits and the prompt files (tables in
  ``corpus_tables.json``);
- ``lexicon``: word knowledge and requests generated from WordNet (``models/demo/lexicon``);
- ``answers``: whether helpful answers are on topic, and right where checkable;
- ``train``: tokenizer, stage 1 (instructions), stage 2 (alignment);
- ``evaluate``: refusal rates per prompt file, and the model card;
- ``select``: the training seed and recipe chosen on the held-out selection sets.
"""
