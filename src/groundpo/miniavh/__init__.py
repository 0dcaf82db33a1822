"""MiniAVH: a controlled miniature of cross-modal hallucination, and a comparison of DPO, OmniDPO,
MoD-DPO and MoD-DPO++ on it (docs/miniavh.md).

- :mod:`.world`: the clips (one visible object, one sound; the sound comes from the visible object
  with probability p in the base distribution), the base SFT rows, the preference data by the
  MoD-DPO recipe and the held-out AVHBench-format set;
- :mod:`.plan`: sizes, methods, the two budget rules, the LLaMA-Factory configs and the jobs;
- :mod:`.worker`: runs the jobs (``run_exp`` for training, ``groundpo-eval`` for evaluation);
- :mod:`.pipeline`: the resumable command with progress (``python -m groundpo.miniavh``);
- :mod:`.report`: tables (mean ± sd over seeds, the paper's Table 1 layout) and the plot.
"""
