"""Evaluation: the omni benchmarks (AVHBench, CMM, DailyOmni, MVBench, MMAU) and the image
hallucination benchmarks (AMBER, Object HalBench, MMHal-Bench, POPE), with decode-time baselines.

- :mod:`~groundpo.eval.metrics`: pure scorers and answer parsers (``parse_yes_no``,
  ``yes_no_scores``, ``cmm_scores``, ``parse_choice``, ``pope_scores``, ``amber_*_scores``,
  ``chair_scores``, ``mmhal_scores``);
- :mod:`~groundpo.eval.coco`: the COCO synonym table (package data) and CHAIR's ground truth;
- :mod:`~groundpo.eval.language`: NLTK and spaCy for AMBER, loaded from paths, never downloaded;
- :mod:`~groundpo.eval.readers`: the official file layouts -> ``EvalItem`` lists;
- :mod:`~groundpo.eval.engine`: generation with LLaMA-Factory's ``ChatModel`` (vLLM: conversations
  in flight); :mod:`~groundpo.eval.batched`: batched Hugging Face generation with left padding;
- :mod:`~groundpo.eval.decoding`: VCD / AVCD as a logits processor over cached streams;
- :mod:`~groundpo.eval.judge`: MMHal-Bench's LLM judge through any OpenAI-compatible endpoint;
- :mod:`~groundpo.eval.runner`: resumable ``predictions.jsonl``, ``metrics.json``, ``results.md``;
- :mod:`~groundpo.eval.tables`: the papers' table layouts, one run or several side by side;
- :mod:`~groundpo.eval.cli`: the ``groundpo-eval`` command;
- :mod:`~groundpo.eval.synthetic`: tiny benchmark folders in every format, for tests and demos.

Importing this package is cheap; torch and LLaMA-Factory load only when a model is.
"""
