"""The workflow of every DPO-family stage of groundpo (upstream's ``run_dpo`` signature).

It follows upstream's DPO workflow step for step (tokenizer, template, dataset with
``stage="rm"``, model, reference model, trainer, train/save/plot, evaluate, model card) and
differs where a multi-view stage needs it: the dataset is built inside
:func:`~groundpo.data.plan.preference_data` (our columns, row checks and token views), the
collator is ``ViewPairwiseDataCollator`` and the trainer ``ViewPreferenceTrainer`` runs the
stage's plan and objective.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

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


def with_row_ids(dataset, offset: int = 0):
    """``dataset`` with a ``row_id`` column: offset, offset + 1, ... (unique across the run's datasets)."""
    if dataset is None:
        return dataset
    if "row_id" in dataset.column_names:
        dataset = dataset.remove_columns("row_id")
    return dataset.add_column("row_id", list(range(offset, offset + len(dataset))))


def number_rows(dataset_module: dict) -> dict:
    """Row ids unique across the training set and every eval set (train first), so that tables keyed
    by row id (precomputed reference log-probs) never confuse a training row with an eval row."""
    offset = 0
    if dataset_module.get("train_dataset") is not None:
        dataset_module["train_dataset"] = with_row_ids(dataset_module["train_dataset"], offset)
        offset += len(dataset_module["train_dataset"])
    eval_sets = dataset_module.get("eval_dataset")
    if isinstance(eval_sets, dict):
        numbered = {}
        for name, dataset in eval_sets.items():
            numbered[name] = with_row_ids(dataset, offset)
            offset += len(dataset)
        dataset_module["eval_dataset"] = numbered
    elif eval_sets is not None:
        dataset_module["eval_dataset"] = with_row_ids(eval_sets, offset)
    return dataset_module


def _deepspeed_comm_ready(training_args) -> None:
    """Let DeepSpeed see the process group before ZeRO-3 partitions the model at load time.

    On GPUs, transformers initialises DeepSpeed's communication itself. With ``use_cpu`` it starts
    torch.distributed (gloo) but not ``deepspeed.comm``, and ZeRO-3's ``zero.Init`` then believes it
    runs alone (world size 1) and stops on a batch-size check. Joining DeepSpeed to the existing
    group makes ZeRO-3 run across CPU processes too (the CPU harness of the test suite uses it).
    """
    import torch.distributed as torch_dist

    if not training_args.deepspeed or not torch_dist.is_available() or not torch_dist.is_initialized():
        return
    import deepspeed

    if not deepspeed.comm.is_initialized():
        deepspeed.init_distributed(dist_backend=torch_dist.get_backend())


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
    _deepspeed_comm_ready(training_args)

    tokenizer_module, template = load_tokenizer_and_template(model_args, data_args)
    data_plan = DataPlan(
        spec.name, token_views=plan.token_views, row_checks=plan.row_checks, input_contrastive=plan.input_contrastive
    )
    with preference_data(data_plan):
        dataset_module = get_dataset(template, model_args, data_args, training_args, stage="rm", **tokenizer_module)
    number_rows(dataset_module)

    model, ref_model = load_policy_and_reference(tokenizer_module, model_args, training_args, finetuning_args)
    data_collator = ViewPairwiseDataCollator(
        **collator_arguments(template, model, data_args, tokenizer_module),
        token_views=tuple(view.name for view in plan.token_views),
    )
    return ViewPreferenceTrainer(
        **trainer_arguments(spec, plan, model, ref_model, data_collator, training_args, finetuning_args, callbacks),
        **dataset_module,
        **tokenizer_module,
    )


def load_tokenizer_and_template(model_args, data_args) -> tuple[dict, Any]:
    """Upstream's tokenizer module (tokenizer, processor) and the template it fixes."""
    tokenizer_module = load_tokenizer(model_args)
    return tokenizer_module, get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)


def load_policy_and_reference(tokenizer_module: dict, model_args, training_args, finetuning_args) -> tuple[Any, Any]:
    """The policy, and the reference as upstream's DPO workflow makes it (None: none needed, or LoRA's adapters off)."""
    model = load_model(tokenizer_module["tokenizer"], model_args, finetuning_args, training_args.do_train)
    if not finetuning_args.use_ref_model:
        return model, None
    if finetuning_args.ref_model is None and not training_args.do_train:
        return model, model
    return model, create_ref_model(model_args, finetuning_args)  # None with LoRA: adapters off


def collator_arguments(template, model, data_args, tokenizer_module: dict) -> dict:
    """The arguments of upstream's multimodal collator, as its DPO workflow gives them."""
    pad = IGNORE_INDEX if data_args.ignore_pad_token_for_loss else tokenizer_module["tokenizer"].pad_token_id
    return dict(template=template, model=model, pad_to_multiple_of=8, label_pad_token_id=pad, **tokenizer_module)


def trainer_arguments(spec, plan, model, ref_model, data_collator, training_args, finetuning_args, callbacks) -> dict:
    """What every trainer of the engine takes besides its data and tokenizer module."""
    return dict(
        model=model, ref_model=ref_model, args=training_args, finetuning_args=finetuning_args,
        data_collator=data_collator, callbacks=callbacks, plan=plan, objective=spec.load_objective(),
        objective_inputs=spec.inputs, metric_keys=spec.metric_keys,
    )


def run_preference(
    model_args: "ModelArguments",
    data_args: "DataArguments",
    training_args: "Seq2SeqTrainingArguments",
    finetuning_args: "FinetuningArguments",
    callbacks: Optional[list["TrainerCallback"]] = None,
):
    trainer = build_trainer(model_args, data_args, training_args, finetuning_args, callbacks)
    train_and_evaluate(trainer, model_args, data_args, training_args, finetuning_args)


def train_and_evaluate(trainer, model_args, data_args, training_args, finetuning_args) -> None:
    """Upstream's DPO workflow after the trainer exists: train, save, plot, evaluate, model card."""
    plan = trainer.plan

    if training_args.do_train:
        # reference precompute and curriculum scoring run when training begins, on the wrapped model;
        # a resumed run reloads the curriculum scores its checkpoint kept
        resume = training_args.resume_from_checkpoint
        if resume is True or resume == "True":
            from transformers.trainer_utils import get_last_checkpoint

            resume = get_last_checkpoint(training_args.output_dir)
        trainer.resume_checkpoint = resume or None
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
    # every rank leaves together, so none tears its process group down while another still works
    trainer.accelerator.wait_for_everyone()
