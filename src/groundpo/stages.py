"""The built-in stages of groundpo, registered on first use of ``groundpo.registry``.

MoD-DPO comes first: it is the flagship and the first entry LlamaBoard lists.
"""

from . import hparams
from .registry import Control, StageSpec, register_stage

register_stage(
    StageSpec(
        name="mod_dpo",
        label={"en": "MoD-DPO", "ru": "MoD-DPO", "zh": "MoD-DPO", "ko": "MoD-DPO", "ja": "MoD-DPO"},
        paper="MoD-DPO (arXiv 2603.03192), Eq. 5-12 and Supp. A",
        workflow="groundpo.train.workflow:run_preference",
        objective="groundpo.losses.mod_dpo:mod_dpo_loss",
        arguments=(hparams.ModDPOArguments,),
        views=("clean", "inv", "sens", "text"),
    )
)

register_stage(
    StageSpec(
        name="base_dpo",
        label={
            "en": "DPO (groundpo engine)",
            "ru": "DPO (движок groundpo)",
            "zh": "DPO（groundpo 引擎）",
            "ko": "DPO (groundpo 엔진)",
            "ja": "DPO（groundpo エンジン）",
        },
        paper="Rafailov et al. 2023 (sigmoid DPO), the baseline of every seed paper",
        workflow="groundpo.train.workflow:run_preference",
        objective="groundpo.losses.dpo:dpo_loss",
        views=("clean",),
    )
)
