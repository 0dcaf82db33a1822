"""Online sampling with a colocated vLLM engine (``mbpo_generation_backend: vllm``): GPU only, experimental.

The default and tested path is HF ``generate`` (:meth:`groundpo.train.mbpo.MBPOTrainer.sample`).
This path follows TRL's colocate mode: every rank holds its own vLLM engine in the training
process (``distributed_executor_backend="external_launcher"``, a share
``mbpo_vllm_gpu_memory_utilization`` of the GPU), the policy's weights are loaded into it before
each generation step (LoRA adapters merged for the copy, ZeRO-3 parameters gathered), and it
samples G responses per prompt with the same temperature, top-p, length and stop tokens.

Limits: images only (LLaMA-Factory's own vLLM engine cannot interleave audio with video, and the
omni path is tested with HF ``generate``); prompts are re-encoded with unexpanded media tokens,
which vLLM expands itself. The test suite runs on CPUs without vLLM, so only the start-up checks
are tested there; check a run on a GPU before relying on it.
"""

from __future__ import annotations

import copy
import json
from contextlib import nullcontext
from typing import Any


class VLLMUnavailable(RuntimeError):
    pass


def check_vllm() -> None:
    """vLLM installed and a CUDA GPU present, else a clear error at start-up."""
    import importlib.util

    import torch

    if importlib.util.find_spec("vllm") is None:
        raise VLLMUnavailable("`mbpo_generation_backend: vllm` needs vLLM (pip install vllm); or use `huggingface`.")
    if not torch.cuda.is_available():
        raise VLLMUnavailable("`mbpo_generation_backend: vllm` needs a CUDA GPU; on CPUs use `huggingface`.")


class VLLMSampler:
    def __init__(self, trainer, finetuning_args) -> None:
        check_vllm()
        from vllm import LLM

        self.trainer = trainer
        self.args = finetuning_args
        model = trainer.accelerator.unwrap_model(trainer.model)
        self.template = copy.copy(trainer.template)
        self.template.mm_plugin = copy.copy(trainer.template.mm_plugin)
        self.template.mm_plugin.expand_mm_tokens = False  # vLLM expands the media tokens itself
        self.llm = LLM(
            model=model.config._name_or_path,
            gpu_memory_utilization=finetuning_args.mbpo_vllm_gpu_memory_utilization,
            tensor_parallel_size=1,
            distributed_executor_backend="external_launcher",
            seed=trainer.args.seed + trainer.args.process_index,
            enable_prefix_caching=True,
        )
        self._synced_step = -1

    def _sync_weights(self, model) -> None:
        """The policy's current weights into the engine, once per optimizer step."""
        if self._synced_step == self.trainer.state.global_step:
            return
        from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

        unwrapped = self.trainer.accelerator.unwrap_model(model)
        gather = nullcontext()
        if is_deepspeed_zero3_enabled():
            import deepspeed

            gather = deepspeed.zero.GatheredParameters(list(unwrapped.parameters()))
        with gather:
            peft = hasattr(unwrapped, "merge_adapter")
            if peft:
                unwrapped.merge_adapter()
            state = unwrapped.get_base_model().state_dict() if peft else unwrapped.state_dict()
            if peft:  # PEFT's wrapped names -> the checkpoint's
                state = {k.replace(".base_layer", ""): v for k, v in state.items() if "lora_" not in k}
            engine_model = self.llm.llm_engine.model_executor.driver_worker.model_runner.model
            engine_model.load_weights(state.items())
            if peft:
                unwrapped.unmerge_adapter()
        self.llm.reset_prefix_cache()
        self._synced_step = self.trainer.state.global_step

    def sample(self, model, prompts: list[dict[str, Any]]) -> list[list[int]]:
        from vllm import SamplingParams

        from ..integration.data import regularize_images

        self._sync_weights(model)
        trainer, a = self.trainer, self.args
        requests = []
        for prompt in prompts:
            if prompt.get("videos") or prompt.get("audios"):
                raise ValueError("`mbpo_generation_backend: vllm` samples image prompts only; use `huggingface` for video and audio")
            messages = json.loads(prompt["messages"])
            images = prompt.get("images") or []
            plugin, processor, tokenizer = self.template.mm_plugin, trainer.data_collator.processor, trainer.processing_class
            messages = plugin.process_messages(messages + [{"role": "assistant", "content": ""}], images, [], [], processor)
            ids, _ = self.template.encode_oneturn(tokenizer, messages, prompt.get("system"), prompt.get("tools"))
            request = {"prompt_token_ids": ids}
            if images:
                request["multi_modal_data"] = {"image": regularize_images(plugin, images, processor)}
            requests.append(request)
        params = SamplingParams(
            n=trainer.num_generations, temperature=a.mbpo_temperature, top_p=a.mbpo_top_p,
            max_tokens=a.mbpo_max_new_tokens, stop_token_ids=trainer.stop_ids,
        )
        outputs = self.llm.generate(requests, sampling_params=params, use_tqdm=False)
        responses = []
        for output in outputs:
            for completion in output.outputs:
                tokens = list(completion.token_ids)
                responses.append(tokens)  # vLLM stops after (and keeps) the stop token
        return responses
