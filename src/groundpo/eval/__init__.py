"""Evaluation of omni models on AVHBench, CMM, DailyOmni, MVBench and MMAU.

- :mod:`~groundpo.eval.metrics`: pure scorers and answer parsers (``parse_yes_no``,
  ``yes_no_scores``, ``cmm_scores``, ``parse_choice``);
- :mod:`~groundpo.eval.readers`: the official file layouts -> ``EvalItem`` lists;
- :mod:`~groundpo.eval.engine`: greedy generation with LLaMA-Factory's ``ChatModel``;
- :mod:`~groundpo.eval.runner`: resumable ``predictions.jsonl``, ``metrics.json``, ``results.md``;
- :mod:`~groundpo.eval.tables`: the papers' table layouts, one run or several side by side;
- :mod:`~groundpo.eval.cli`: the ``groundpo-eval`` command;
- :mod:`~groundpo.eval.synthetic`: tiny benchmark folders in every format, for tests and demos.

Importing this package is cheap; torch and LLaMA-Factory load only when a model is.
"""
