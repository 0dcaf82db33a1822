"""The workflow of every DPO-family stage of groundpo (upstream's ``run_dpo`` signature).

It follows upstream's DPO workflow step for step (tokenizer, template, dataset with
``stage="rm"``, model, reference model, trainer, train/save/plot, evaluate, model card) and
differs where a multi-view stage needs it: the dataset is built inside
:func:`~groundpo.data.plan.preference_data` (our columns, row checks and token views), the
collator is ``ViewPairwiseDataCollator`` and the trainer ``ViewPreferenceTrainer`` runs the
stage's plan and objective.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Optional

from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
from llamafactory.extras.constants import IGNORE_INDEX
from llamafactory.extras.ploting import plot_loss
from llamafactory.model import load_model, load_tokenizer
from llamafactory.train.trainer_utils import create_modelcard_and_push, create_ref_model

from ..data.collator import ViewPairwiseDataCollator
from ..data.plan import DataPlan, preference_data
from ..registry import get_stage
from .trainer import ViewPreferenceTrainer

if TYPE_CHECKING:
    from transformers import Seq2SeqTrainingArguments, TrainerCallback

    from llamafactory.hparams import DataArguments, FinetuningArguments, ModelArguments


CURRICULUM_FILE = "curriculum_scores.json"


def _with_row_ids(dataset):
    if dataset is None or "row_id" in dataset.column_names:
        return dataset
    return dataset.add_column("row_id", list(range(len(dataset))))


def build_trainer(
    model_args: "ModelArguments",
    data_args: "DataArguments",
    training_args: "Seq2SeqTrainingArguments",
    finetuning_args: "FinetuningArguments",
    callbacks: Optional[list["TrainerCallback"]] = None,
) -> ViewPreferenceTrainer:
    """Tokenizer, data, model, reference and trainer of the stage in ``finetuning_args.stage``."""
    spec = get_stage(finetuning_args.stage)
    plan = spec.plan(finetuning_args)

    tokenizer_module = load_tokenizer(model_args)
    tokenizer = tokenizer_module["tokenizer"]
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    data_plan = DataPlan(
        spec.name, token_views=plan.token_views, row_checks=plan.row_checks, input_contrastive=plan.input_contrastive
    )
    with preference_data(data_plan):
        dataset_module = get_dataset(template, model_args, data_args, training_args, stage="rm", **tokenizer_module)
    if "train_dataset" in dataset_module:
        dataset_module["train_dataset"] = _with_row_ids(dataset_module["train_dataset"])
    if isinstance(dataset_module.get("eval_dataset"), dict):
        dataset_module["eval_dataset"] = {k: _with_row_ids(v) for k, v in dataset_module["eval_dataset"].items()}
    elif dataset_module.get("eval_dataset") is not None:
        dataset_module["eval_dataset"] = _with_row_ids(dataset_module["eval_dataset"])

    model = load_model(tokenizer, model_args, finetuning_args, training_args.do_train)
    data_collator = ViewPairwiseDataCollator(
        template=template,
        model=model,
        pad_to_multiple_of=8,
        label_pad_token_id=IGNORE_INDEX if data_args.ignore_pad_token_for_loss else tokenizer.pad_token_id,
        token_views=tuple(view.name for view in plan.token_views),
        **tokenizer_module,
    )

    if finetuning_args.use_ref_model:
        if finetuning_args.ref_model is None and not training_args.do_train:
            ref_model = model
        else:
            ref_model = create_ref_model(model_args, finetuning_args)  # None with LoRA: adapters off
    else:
        ref_model = None

    return ViewPreferenceTrainer(
        model=model,
        ref_model=ref_model,
        args=training_args,
        finetuning_args=finetuning_args,
        data_collator=data_collator,
        callbacks=callbacks,
        plan=plan,
        objective=spec.load_objective(),
        objective_inputs=spec.inputs,
        **dataset_module,
        **tokenizer_module,
    )


def run_preference(
    model_args: "ModelArguments",
    data_args: "DataArguments",
    training_args: "Seq2SeqTrainingArguments",
    finetuning_args: "FinetuningArguments",
    callbacks: Optional[list["TrainerCallback"]] = None,
):
    trainer = build_trainer(model_args, data_args, training_args, finetuning_args, callbacks)
    plan = trainer.plan

    if training_args.do_train:
        if plan.precompute_reference:
            trainer.precompute_reference()
        if plan.curriculum:  # cached next to the output: a resumed run reuses the scores
            trainer.score_difficulty(os.path.join(training_args.output_dir, CURRICULUM_FILE))
        train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.save_model()
        trainer.log_metrics("train", train_result.metrics)
        trainer.save_metrics("train", train_result.metrics)
        trainer.save_state()
        if trainer.is_world_process_zero() and finetuning_args.plot_loss:
            plot_loss(training_args.output_dir, keys=list(plan.plot_keys) + ["eval_loss"])

    if training_args.do_eval:
        metrics = trainer.evaluate(metric_key_prefix="eval")
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)

    create_modelcard_and_push(trainer, model_args, data_args, training_args, finetuning_args)
