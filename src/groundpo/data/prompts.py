"""Prompt rows with a verifiable answer: MBPO's online data (seed 003, Sec. 4.2).

A closed-ended question (yes/no, or multiple choice with an ``options`` column) and its gold
``answer``; the policy samples G responses to the prompt during training and
:func:`groundpo.rewards.verified_reward` scores them. Such datasets are registered with
``"ranking": false`` and loaded through upstream's ``stage="ppo"`` path, where
``groundpo.integration.data`` puts :class:`PromptDatasetProcessor` in place of upstream's
``UnsupervisedDatasetProcessor`` (inside :func:`groundpo.data.plan.preference_data` with a
``DataPlan(prompts=True)``).

The prompt is encoded exactly as upstream encodes a PPO prompt (template, media tokens expanded,
ending with the assistant's header). A sharegpt row needs the assistant turn that upstream's
converter requires; its text is not trained on (``answer`` is what counts). Rows upstream would
drop or truncate silently (a prompt that ends with an assistant turn, a prompt that fills
``cutoff_len``) are errors naming dataset, row and field.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from llamafactory.data.processor import UnsupervisedDatasetProcessor

from ..integration.data import encode_prompt
from ..rewards import option_map
from .rows import RowError


class PromptDatasetProcessor(UnsupervisedDatasetProcessor):
    def preprocess_dataset(self, examples: dict[str, list[Any]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = defaultdict(list)
        for i in range(len(examples["_prompt"])):
            row = {key: values[i] for key, values in examples.items()}
            where = f"dataset {row.get('_source_dataset')!r}, row {row.get('_source_row')}"
            if len(row["_prompt"]) % 2 != 1:
                raise RowError(f"{where}, field 'messages': the prompt must end with a user turn")
            try:
                ids = encode_prompt(
                    self, row["_prompt"], row["_system"], row["_tools"],
                    row["_images"] or [], row["_videos"] or [], row["_audios"] or [],
                )
            except Exception as error:  # unreadable media and the like
                raise RowError(f"{where}, field 'media': {type(error).__name__}: {error}") from error
            if len(ids) >= self.data_args.cutoff_len:
                raise RowError(
                    f"{where}, field 'messages': the prompt takes {len(ids)} tokens, `cutoff_len` is "
                    f"{self.data_args.cutoff_len}; raise `cutoff_len` (the sampled response comes after the prompt)"
                )
            options = option_map(row.get("_options"))
            out["input_ids"].append(ids)
            out["attention_mask"].append([1] * len(ids))
            for kind in ("images", "videos", "audios"):
                out[kind].append(row[f"_{kind}"])
            out["answer"].append(row["_answer"])
            out["options"].append(json.dumps(options) if options else None)  # one Arrow type for lists and mappings
            out["messages"].append(json.dumps(row["_prompt"]))  # unexpanded, for a vLLM sampler
            out["system"].append(row["_system"])
            out["tools"].append(row["_tools"])
            out["source_dataset"].append(row.get("_source_dataset"))
            out["source_row"].append(row.get("_source_row"))
        return out

    def print_data_example(self, example: dict[str, Any]) -> None:
        print(f"prompt_ids:\n{example['input_ids']}")
        print(f"prompt:\n{self.tokenizer.decode(example['input_ids'], skip_special_tokens=False)}")
        print(f"answer: {example['answer']}  options: {example['options']}")
