"""Patches of LLaMA-Factory's data pipeline for multi-view preference rows.

Upstream's dataset pipeline knows a fixed set of columns and picks its dataset processor by
stage. While one of our workflows loads its data (inside :func:`groundpo.data.plan.preference_data`):

- ``DatasetAttr.join`` (``llamafactory.data.parser``) also keeps our logical columns
  (``modality``, ``rejected_images``, ``region``, ...; see ``groundpo.data.rows``);
- ``align_dataset`` as used by ``llamafactory.data.loader`` adds them to the aligned dataset as
  ``_<column>`` (media paths resolved like upstream's), plus ``_source_dataset``/``_source_row``,
  then checks every row (``groundpo.data.rows``), so a bad row stops training before it starts;
- ``_get_dataset_processor`` returns our ``ViewPairwiseDatasetProcessor``.

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
    align_dataset, get_processor, _ = require(
        loader, "align_dataset", "_get_dataset_processor", "PairwiseDatasetProcessor._encode_data_example"
    )
    from llamafactory.data import converter

    require(converter, "get_dataset_converter", "DatasetConverter._find_medias")

    def _align_dataset(dataset, dataset_attr, data_args, training_args):
        from groundpo.data.plan import active_plan

        aligned = align_dataset(dataset, dataset_attr, data_args, training_args)
        plan = active_plan()
        if plan is None:
            return aligned
        return _add_columns_and_check(dataset, aligned, dataset_attr, data_args, plan)

    def _get_dataset_processor(data_args, stage, template, tokenizer, processor, do_generate=False):
        from groundpo.data.plan import active_plan
        from groundpo.data.processor import ViewPairwiseDatasetProcessor

        plan = active_plan()
        if plan is None or stage != "rm":
            return get_processor(data_args, stage, template, tokenizer, processor, do_generate)
        return ViewPairwiseDatasetProcessor(
            template=template, tokenizer=tokenizer, processor=processor, data_args=data_args,
            token_views=plan.token_views, input_contrastive=plan.input_contrastive,
        )

    _align_dataset.__wrapped__ = align_dataset
    _get_dataset_processor.__wrapped__ = get_processor
    loader.align_dataset = _align_dataset
    loader._get_dataset_processor = _get_dataset_processor


def _add_columns_and_check(raw, aligned, dataset_attr, data_args, plan):
    from llamafactory.data.converter import get_dataset_converter

    from groundpo.data.rows import EXTRA_COLUMNS, MEDIA_COLUMNS, check_rows

    if not hasattr(aligned, "add_column"):
        raise ValueError(f"Stage {plan.stage!r} does not support `streaming: true`; load the dataset in memory.")

    name = getattr(dataset_attr, "dataset_name", str(dataset_attr))
    columns = getattr(dataset_attr, "groundpo_columns", {})
    find_medias = get_dataset_converter(dataset_attr.formatting, dataset_attr, data_args)._find_medias
    n = len(aligned)
    for column in EXTRA_COLUMNS:
        values = list(raw[columns[column]]) if column in columns else [None] * n
        if column in MEDIA_COLUMNS:
            values = [find_medias(v) for v in values]
        aligned = aligned.add_column(f"_{column}", values)
    aligned = aligned.add_column("_source_dataset", [name] * n)
    aligned = aligned.add_column("_source_row", list(range(n)))

    check_rows(name, aligned.to_list(), plan.row_checks)
    return aligned


def encode_pair(processor, prompt, response, system, tools, images, videos, audios):
    """Upstream's pairwise encoding of one row: (chosen_ids, chosen_labels, rejected_ids, rejected_labels).

    ``PairwiseDatasetProcessor._encode_data_example`` is upstream's single place for this, with
    its truncation rule; we call it for every view so all views truncate alike.
    """
    return processor._encode_data_example(
        prompt=prompt, response=response, system=system, tools=tools, images=images, videos=videos, audios=audios
    )
