"""groundpo: modality-grounded preference optimisation stages for LLaMA-Factory.

Installing the package registers its stages (``groundpo.registry``) into the unmodified
``llamafactory-cli``; see ``groundpo.integration``. Importing this package is cheap: heavy
modules (torch, transformers, llamafactory) load only when a submodule needs them.
"""

__version__ = "0.1.0"
