"""What a MiniAVH run trains and evaluates: sizes, methods, budget rules, configs and jobs.

Every training is a LLaMA-Factory config (``configs/*.yaml`` in the run folder, runnable as is
with ``llamafactory-cli train``) and every evaluation a ``groundpo-eval avhbench`` command line.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..testing.tiny_omni import TinyOmniSpec

TEMPLATE = "qwen2_omni"
# media settings shared by training and evaluation: 56x56 frames, 2 frames per second, at most 4
MEDIA_ARGS = {"video_max_pixels": 3136, "image_max_pixels": 3136, "video_maxlen": 4, "video_fps": 2.0}


@dataclass(frozen=True)
class Method:
    key: str
    label: str
    stage: str
    args: dict = field(default_factory=dict)
    baseline: bool = True  # the paper's budget rule gives baselines more epochs


# the paper's settings (Sec. 5.2, Supp. C.3): β = 0.1 everywhere; MoD-DPO β_inv 0.02, β_sens 0.05,
# γ_LPD 0 (MoD-DPO) or 0.05 (MoD-DPO++), τ as Eq. 8, diffusion noise at t = 500; OmniDPO λ_V = λ_A = 1
MOD_ARGS = {"mod_beta_inv": 0.02, "mod_beta_sens": 0.05, "mod_tau": "paper", "mod_corruption": "diffusion", "mod_diffusion_steps": 500}
METHODS: dict[str, Method] = {
    m.key: m
    for m in (
        Method("dpo", "DPO", "dpo"),  # upstream LLaMA-Factory DPO
        Method("omni_dpo", "OmniDPO", "omni_dpo", {"omni_dpo_lambda_v": 1.0, "omni_dpo_lambda_a": 1.0, "omni_dpo_noise_std": 1.0}),
        Method("mod_dpo", "MoD-DPO", "mod_dpo", {**MOD_ARGS, "mod_gamma_lpd": 0.0}, baseline=False),
        Method("mod_dpo_pp", "MoD-DPO++", "mod_dpo", {**MOD_ARGS, "mod_gamma_lpd": 0.05}, baseline=False),
    )
}
ARMS = {"paper": "paper budget (baselines 4 epochs, MoD-DPO 1)", "equal": "equal epochs"}


@dataclass(frozen=True)
class Size:
    """Everything a run's outcome depends on (its fingerprint)."""

    name: str
    n_sft: int  # base-distribution clips
    questions_per_clip: int  # SFT rows per clip
    n_pref: int  # preference contexts
    n_test: int  # held-out clips (5 yes/no questions each)
    p: float = 0.9  # P(the sound comes from the visible object) in the base distribution
    mismatch_ratio: float = 0.7  # preference contexts that are mismatched (groundpo-data's default)
    world_seed: int = 0
    model: dict = field(default_factory=dict)  # TinyOmniSpec fields
    sft_epochs: float = 4.0
    sft_lr: float = 2.0e-3
    sft_batch: int = 16
    pref_lr: float = 1.0e-4
    pref_batch: int = 8
    pref_beta: float = 0.1
    baseline_epochs: float = 4.0  # the paper's budget rule: DPO and OmniDPO 4 epochs ...
    mod_epochs: float = 1.0  # ... MoD-DPO 1
    equal_epochs: float = 1.0  # the equal-epochs arm: every method this many
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = tuple(METHODS)
    eval_batch: int = 64

    def spec(self, extra_corpus: str) -> TinyOmniSpec:
        return TinyOmniSpec(**self.model, extra_corpus=extra_corpus)

    def epochs(self, arm: str, method: str) -> float:
        if arm == "equal":
            return self.equal_epochs
        return self.baseline_epochs if METHODS[method].baseline else self.mod_epochs

    def fingerprint(self) -> dict:
        return asdict(self)


_MODEL = dict(
    hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
    vision_hidden_size=64, vision_depth=2, audio_d_model=64, audio_layers=2, audio_chunk_seconds=1, vocab_size=768,
)
SIZES: dict[str, Size] = {
    # sized for a shared 2-core CPU (docs/miniavh.md: the base SFT needs ~1000 steps of batch 8 before its
    # yes/no answers follow its perception; OmniDPO and MoD-DPO steps cost 2-3 DPO steps)
    "default": Size("default", n_sft=400, questions_per_clip=4, n_pref=24, n_test=40, model=_MODEL, sft_epochs=5.0,
                    sft_lr=1.0e-3, sft_batch=8, pref_lr=5.0e-5, pref_batch=4),
    # the test suite's: every stage, minutes of nothing (mechanics only; the numbers mean nothing)
    "quick": Size(
        "quick", n_sft=8, questions_per_clip=2, n_pref=2, n_test=2, sft_epochs=1.0, seeds=(0,), baseline_epochs=1.0,
        model=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                   vision_hidden_size=16, vision_depth=1, audio_d_model=16, audio_layers=1, audio_chunk_seconds=1,
                   vocab_size=768),
    ),
    # for a GPU machine: more data, a bigger model, five seeds
    "large": Size(
        "large", n_sft=2000, questions_per_clip=3, n_pref=400, n_test=300, seeds=(0, 1, 2, 3, 4),
        model={**_MODEL, "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 6, "num_attention_heads": 8,
               "num_key_value_heads": 4},
    ),
}


def size_with(name: str, **overrides) -> Size:
    base = SIZES[name]
    if "seeds" in overrides and overrides["seeds"] is not None:
        overrides["seeds"] = tuple(overrides["seeds"])
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


# ---------------------------------------------------------------- runs and jobs
@dataclass(frozen=True)
class Run:
    method: str
    epochs: float
    seed: int

    @property
    def name(self) -> str:
        return f"{self.method}-ep{self.epochs:g}-seed{self.seed}"


def runs(size: Size) -> list[Run]:
    """The distinct trainings of both arms (a run both arms share is trained once), by seed."""
    out: list[Run] = []
    for seed in size.seeds:
        for arm in ARMS:
            for method in size.methods:
                run = Run(method, size.epochs(arm, method), seed)
                if run not in out:
                    out.append(run)
    return out


def arm_runs(size: Size, arm: str, method: str) -> list[Run]:
    return [Run(method, size.epochs(arm, method), seed) for seed in size.seeds]


@dataclass
class Job:
    """One unit of work of the worker; ``kind`` is ``model``, ``train`` or ``eval``."""

    name: str
    kind: str
    label: str
    config: dict
    output_dir: str
    progress_total: int = 0  # eval: items; train: 0 (read from trainer_log.jsonl)


def common_train_args(size: Size) -> dict:
    return {
        "trust_remote_code": False,
        **MEDIA_ARGS,
        "do_train": True,
        "finetuning_type": "full",
        "freeze_vision_tower": False,
        "freeze_multi_modal_projector": False,
        "disable_gradient_checkpointing": True,
        "template": TEMPLATE,
        "cutoff_len": 256,
        "overwrite_cache": True,
        "preprocessing_num_workers": 1,
        "dataloader_num_workers": 0,
        "logging_steps": 1,
        "save_strategy": "no",
        "overwrite_output_dir": True,
        "report_to": "none",
        "use_cpu": True,
    }


def sft_config(size: Size, root: Path) -> dict:
    return {
        "model_name_or_path": str(root / "models" / "init"),
        **common_train_args(size),
        "stage": "sft",
        "dataset": "miniavh_sft",
        "dataset_dir": str(root / "world"),
        "output_dir": str(root / "models" / "base"),
        "per_device_train_batch_size": size.sft_batch,
        "learning_rate": size.sft_lr,
        "lr_scheduler_type": "cosine",
        "warmup_ratio": 0.05,
        "num_train_epochs": size.sft_epochs,
        "seed": size.world_seed,
    }


def pref_config(size: Size, root: Path, run: Run) -> dict:
    method = METHODS[run.method]
    return {
        "model_name_or_path": str(root / "models" / "base"),
        **common_train_args(size),
        "stage": method.stage,
        "pref_beta": size.pref_beta,
        **method.args,
        "dataset": "miniavh_pref",
        "dataset_dir": str(root / "world"),
        "output_dir": str(root / "models" / "runs" / run.name),
        "per_device_train_batch_size": size.pref_batch,
        "learning_rate": size.pref_lr,
        "lr_scheduler_type": "constant",
        "num_train_epochs": run.epochs,
        "seed": run.seed,
    }


def eval_argv(size: Size, root: Path, model_dir: Path, output_dir: Path, run_name: str) -> list[str]:
    argv = [
        "avhbench", "--model_name_or_path", str(model_dir), "--template", TEMPLATE,
        "--data_dir", str(root / "world" / "avhbench"), "--output_dir", str(output_dir), "--run_name", run_name,
        "--use_audio_in_video", "false", "--batch_size", str(size.eval_batch), "--infer_backend", "huggingface",
        "--disable_tqdm",
    ]
    for key, value in MEDIA_ARGS.items():
        argv += [f"--{key}", str(value)]
    return argv


def jobs(size: Size, root: Path, n_test_items: int) -> list[Job]:
    """Every job of a run, in order: the base model, its SFT and evaluation, then per run its
    training and evaluation (seed by seed)."""
    out = [
        Job("model", "model", "build the initial model", {}, str(root / "models" / "init")),
        Job("sft", "train", "base SFT (llamafactory stage sft)", sft_config(size, root), str(root / "models" / "base")),
        Job("eval-base", "eval", "evaluate the base model", {"argv": eval_argv(size, root, root / "models" / "base", root / "evals" / "base", "base")},
            str(root / "evals" / "base"), n_test_items),
    ]
    for run in runs(size):
        label = f"{METHODS[run.method].label}, {run.epochs:g} epoch(s), seed {run.seed}"
        out.append(Job(f"train-{run.name}", "train", f"train {label}", pref_config(size, root, run), str(root / "models" / "runs" / run.name)))
        out.append(Job(
            f"eval-{run.name}", "eval", f"evaluate {label}",
            {"argv": eval_argv(size, root, root / "models" / "runs" / run.name, root / "evals" / run.name, run.name)},
            str(root / "evals" / run.name), n_test_items,
        ))
    return out
