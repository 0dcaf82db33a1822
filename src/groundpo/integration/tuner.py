"""Patch of ``llamafactory.train.tuner``: dispatch our stages to their workflows.

Upstream's ``_training_function`` parses the arguments, builds the callbacks (logging,
LlamaBoard's reporter, early stopping, profilers...) and then picks a workflow with a fixed
if/elif chain on ``finetuning_args.stage``. To keep every bit of that preparation, we do not
replace the function. Instead:

1. ``tuner.get_train_args`` is wrapped: when the stage is ours, it records the stage in
   ``finetuning_args.groundpo_stage`` and lets the dispatch chain see its carrier stage ``dpo``;
2. ``tuner.run_dpo`` is wrapped: a call that carries a groundpo stage restores the real stage
   name and runs the workflow of its :class:`~groundpo.registry.StageSpec`; any other call is
   upstream's ``run_dpo``, untouched.

Between the two wrappers upstream only constructs callbacks, none of which reads the stage.
"""

from __future__ import annotations

from types import ModuleType

from .upstream import require

CARRIER_STAGE = "dpo"


def patch(tuner: ModuleType) -> None:
    get_train_args, run_dpo, _ = require(tuner, "get_train_args", "run_dpo", "_training_function")

    def _get_train_args(args=None):
        from groundpo.registry import is_registered

        model_args, data_args, training_args, finetuning_args, generating_args = get_train_args(args)
        if is_registered(finetuning_args.stage):
            finetuning_args.groundpo_stage = finetuning_args.stage
            finetuning_args.stage = CARRIER_STAGE
        return model_args, data_args, training_args, finetuning_args, generating_args

    def _run_dpo(model_args, data_args, training_args, finetuning_args, callbacks=None):
        stage = getattr(finetuning_args, "groundpo_stage", None)
        if stage is None:
            return run_dpo(model_args, data_args, training_args, finetuning_args, callbacks)

        from groundpo.registry import get_stage

        finetuning_args.stage = stage
        del finetuning_args.groundpo_stage
        return get_stage(stage).load_workflow()(model_args, data_args, training_args, finetuning_args, callbacks)

    _get_train_args.__wrapped__ = get_train_args
    _run_dpo.__wrapped__ = run_dpo
    tuner.get_train_args = _get_train_args
    tuner.run_dpo = _run_dpo
