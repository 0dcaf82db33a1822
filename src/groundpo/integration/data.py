"""Patches of LLaMA-Factory's data pipeline for multi-view preference rows.

Upstream's dataset pipeline knows a fixed set of columns and picks its dataset processor by
stage. While one of our workflows loads its data (inside :func:`groundpo.data.plan.preference_data`):

- ``DatasetAttr.join`` (``llamafactory.data.parser``) also keeps our logical columns
  (``modality``, ``rejected_images``, ``region``, ...; see ``groundpo.data.rows``);
- ``align_dataset`` as used by ``llamafactory.data.loader`` adds them to the aligned dataset as
  ``_<column>`` (media paths resolved like upstream's), plus ``_source_dataset``/``_source_row``,
  then checks every row (``groundpo.data.rows``), so a bad row stops training before it starts;
- ``_get_dataset_processor`` returns our ``ViewPairwiseDatasetProcessor`` (stage ``rm``), or our
  ``PromptDatasetProcessor`` (stage ``ppo``) for MBPO's prompt rows.

Outside that context every patched function behaves exactly like upstream's.
"""

from __future__ import annotations

from types import ModuleType

from .upstream import require


def patch_dataset_attr(parser: ModuleType) -> None:
    (dataset_attr_cls,) = require(parser, "DatasetAttr")
    (join,) = require(dataset_attr_cls, "join")

    def _join(self, attr: dict) -> None:
        from groundpo.data.rows import EXTRA_COLUMNS

        join(self, attr)
        columns = attr.get("columns", {})
        self.groundpo_columns = {name: columns[name] for name in EXTRA_COLUMNS if name in columns}

    _join.__wrapped__ = join
    dataset_attr_cls.join = _join


def patch_loader(loader: ModuleType) -> None:
    align_dataset, get_processor, load_single, _, _ = require(
        loader, "align_dataset", "_get_dataset_processor", "_load_single_dataset",
        "PairwiseDatasetProcessor._encode_data_example", "UnsupervisedDatasetProcessor._encode_data_example",
    )
    from llamafactory.data import converter

    require(converter, "get_dataset_converter", "DatasetConverter._find_medias")

    def _align_dataset(dataset, dataset_attr, data_args, training_args):
        from groundpo.data.plan import active_plan

        plan = active_plan()
        if plan is not None and hasattr(dataset, "add_column"):  # types first: the converter fails obscurely
            from groundpo.data.rows import check_raw_rows

            name = getattr(dataset_attr, "dataset_name", str(dataset_attr))
            check_raw_rows(name, dataset, dataset_attr, getattr(dataset_attr, "groundpo_columns", {}))
        aligned = align_dataset(dataset, dataset_attr, data_args, training_args)
        if plan is None:
            return aligned
        return _add_columns_and_check(dataset, aligned, dataset_attr, data_args, plan)

    def _get_dataset_processor(data_args, stage, template, tokenizer, processor, do_generate=False):
        from groundpo.data.plan import active_plan
        from groundpo.data.processor import ViewPairwiseDatasetProcessor

        plan = active_plan()
        if plan is not None and plan.prompts and stage == "ppo":
            from groundpo.data.prompts import PromptDatasetProcessor

            return PromptDatasetProcessor(template=template, tokenizer=tokenizer, processor=processor, data_args=data_args)
        if plan is None or stage != "rm":
            return get_processor(data_args, stage, template, tokenizer, processor, do_generate)
        return ViewPairwiseDatasetProcessor(
            template=template, tokenizer=tokenizer, processor=processor, data_args=data_args,
            token_views=plan.token_views, input_contrastive=plan.input_contrastive,
        )

    def _load_single_dataset(dataset_attr, model_args, data_args, training_args):
        from groundpo.data.plan import active_plan

        try:
            return load_single(dataset_attr, model_args, data_args, training_args)
        except Exception as error:  # `datasets` says "An error occurred while generating the dataset"
            if active_plan() is None or getattr(dataset_attr, "load_from", None) != "file":
                raise
            _diagnose_files(error, dataset_attr, data_args)
            raise

    _align_dataset.__wrapped__ = align_dataset
    _get_dataset_processor.__wrapped__ = get_processor
    _load_single_dataset.__wrapped__ = load_single
    loader.align_dataset = _align_dataset
    loader._get_dataset_processor = _get_dataset_processor
    loader._load_single_dataset = _load_single_dataset


def _diagnose_files(error: Exception, dataset_attr, data_args) -> None:
    """Find the row that made a local dataset file unloadable and raise a RowError naming it."""
    import os

    from groundpo.data.rows import check_raw_rows, read_raw_rows

    local = os.path.join(data_args.dataset_dir, dataset_attr.dataset_name)
    files = [os.path.join(local, f) for f in os.listdir(local)] if os.path.isdir(local) else [local]
    try:
        rows = list(read_raw_rows(files))
    except ValueError:  # not JSON we can read: keep upstream's error
        return
    check_raw_rows(dataset_attr.dataset_name, rows, dataset_attr, getattr(dataset_attr, "groundpo_columns", {}))


def _add_columns_and_check(raw, aligned, dataset_attr, data_args, plan):
    from llamafactory.data.converter import get_dataset_converter

    from groundpo.data.rows import COMMON_CHECKS, EXTRA_COLUMNS, MEDIA_COLUMNS, PROMPT_CHECKS, check_rows

    if not hasattr(aligned, "add_column"):
        raise ValueError(f"Stage {plan.stage!r} does not support `streaming: true`; load the dataset in memory.")

    name = getattr(dataset_attr, "dataset_name", str(dataset_attr))
    columns = getattr(dataset_attr, "groundpo_columns", {})
    find_medias = get_dataset_converter(dataset_attr.formatting, dataset_attr, data_args)._find_medias
    n = len(aligned)
    for column in EXTRA_COLUMNS:
        present = column in columns and columns[column] in raw.column_names  # a mapped column no row has: all None
        values = list(raw[columns[column]]) if present else [None] * n
        if column in MEDIA_COLUMNS:
            values = [find_medias(v) for v in values]
        aligned = aligned.add_column(f"_{column}", values)
    aligned = aligned.add_column("_source_dataset", [name] * n)
    aligned = aligned.add_column("_source_row", list(range(n)))

    check_rows(name, aligned.to_list(), plan.row_checks, common=PROMPT_CHECKS if plan.prompts else COMMON_CHECKS)
    return aligned


def encode_pair(processor, prompt, response, system, tools, images, videos, audios):
    """Upstream's pairwise encoding of one row: (chosen_ids, chosen_labels, rejected_ids, rejected_labels).

    ``PairwiseDatasetProcessor._encode_data_example`` is upstream's single place for this, with
    its truncation rule; we call it for every view so all views truncate alike.
    """
    return processor._encode_data_example(
        prompt=prompt, response=response, system=system, tools=tools, images=images, videos=videos, audios=audios
    )


def encode_prompt(processor, prompt, system, tools, images, videos, audios) -> list[int]:
    """Upstream's encoding of a prompt for generation (``UnsupervisedDatasetProcessor._encode_data_example``,
    the PPO stage's): the prompt's ids, media tokens expanded, ending with the assistant's header."""
    input_ids, _ = processor._encode_data_example(
        prompt=prompt, response=[], system=system, tools=tools, images=images, videos=videos, audios=audios
    )
    return input_ids


def regularize_images(plugin, images, processor) -> list:
    """Images as upstream's vLLM engine hands them to vLLM (``mm_plugin._regularize_images``: RGB, resized
    to the processor's ``image_max_pixels`` / ``image_min_pixels``)."""
    (regularize,) = require(plugin, "_regularize_images")
    return regularize(
        images,
        image_max_pixels=getattr(processor, "image_max_pixels", 768 * 768),
        image_min_pixels=getattr(processor, "image_min_pixels", 32 * 32),
    )["images"]
