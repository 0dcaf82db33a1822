"""groundpo in LlamaBoard (``llamafactory-cli webui``).

- :mod:`groundpo.webui.controls`: how each YAML key appears in LlamaBoard (kind, range, choices,
  labels and info in en/ru/zh/ko/ja), defined once per key; ``StageSpec.controls`` derives a
  stage's controls from its keys.
- ``groundpo.integration.webui``: the patches that put every registered stage and its controls
  into upstream's unmodified LlamaBoard (applied by the overlay's import hook).

See ``docs/webui.md``.
"""
