"""The only code of groundpo that touches LLaMA-Factory's private symbols.

``bootstrap`` (run from ``groundpo_overlay.pth`` at interpreter start-up) applies each patch when
its upstream module is imported; every patch checks its targets with ``upstream.require`` first.

- ``parser``: our argument dataclass and stage/key validation in ``get_train_args``;
- ``tuner``: dispatch of our stages to their workflows;
- ``data``: our dataset columns, converter output and dataset processor;
- ``callbacks``: our metrics in ``trainer_log.jsonl``;
- ``checkpoints``: ``torch.load`` of the ``cpu:N`` map locations a multi-process CPU run resumes with;
- ``webui``: our stages and their controls in LlamaBoard;
- ``deepspeed_gloo``: DeepSpeed ZeRO-3's parameter gathers complete in order under gloo (the only
  patch of a library other than LLaMA-Factory: a CPU-only race, see its docstring).
"""
