"""Benchmark: step time and peak memory of upstream dpo against groundpo's engine (base_dpo, mod_dpo, mod_dpo++).

A benchmark, not a test. Every variant trains the same config in one run, each in its own process;
the script prints median step time (full iterations: data loading, all passes, backward, optimizer)
and peak memory, and their ratios against upstream ``dpo``. Two presets:

- ``tiny`` (default): the tiny offline Qwen2.5-Omni (a few hundred thousand parameters), 8 video
  frames (2 s at 4 fps, 112×112) and 2 s of 16 kHz audio per row, batch 2, towers trained. Here a
  step is dominated by work that does not grow with the passes (decoding media, the optimizer).
- ``compute``: LLM-dominated, as the 7B setups are: a random Qwen2.5-Omni thinker of ~27 M
  parameters (hidden 512, 8 layers), a 32-frame 224×224 clip (1,024 video tokens) with 8 s of audio
  per prompt, answers of 20–40 tokens, frozen towers (LLaMA-Factory's default), batch 1.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_step.py [--preset compute] [--steps 8] [--check] [--out f.json]
    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_step.py --preset compute --sweep frames --plot sweep.png

``--sweep frames`` runs ``dpo`` and ``mod_dpo++`` at 4 to 64 frames (``--frames 4,16,64`` picks the
points) and draws step time and peak memory against the number of frames.

Where the time goes: every forward of the vision and audio towers and of the LLM (policy and
reference, with and without gradient) is timed through their classes' ``forward``, the optimizer
step through the trainer's callbacks, and the time from the end of a step to the next step's first
forward (loading, collating, building views); the rest of the step is the backward and the loss.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` during training (bf16); on CPU, the peak of
the bytes glibc's allocator has handed out (``mallinfo2``: heap in use + mmapped chunks), sampled
every millisecond, minus the value when training starts — the CPU analogue of allocated memory,
much steadier than the resident set size. Other processes on the machine distort CPU timings:
run it on a quiet machine. ``--check`` exits 1 when a ratio exceeds the preset's budget.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VARIANTS = {
    "dpo": {"stage": "dpo"},
    "base_dpo": {"stage": "base_dpo"},
    "mod_dpo": {"stage": "mod_dpo", "mod_gamma_lpd": 0.0},
    "mod_dpo++": {"stage": "mod_dpo", "mod_gamma_lpd": 0.05},
}
# ratio budgets against upstream dpo: (variant, "time" | "memory") -> bound
BUDGETS = {
    # tiny: MoD-DPO++'s FLOP ratio of 6+4 forwards and 2 backwards against DPO's 2+2 and 2 (Tab. 7)
    "tiny": {("mod_dpo++", "time"): 1.75, ("mod_dpo++", "memory"): 1.15},
    # compute: the shared prompt prefix and media encodings (issue 14 of the tracker)
    "compute": {("mod_dpo++", "time"): 0.8, ("mod_dpo++", "memory"): 0.8, ("base_dpo", "time"): 0.6},
}
SWEEP_FRAMES = (4, 8, 16, 32, 64)
SWEEP_VARIANTS = ("dpo", "mod_dpo++")


@dataclass(frozen=True)
class Preset:
    spec: dict  # TinyOmniSpec fields
    rows: int
    seconds: float
    fps: float
    size: int
    batch: int
    answer_words: int  # words of filler added to each answer (0: short answers)
    freeze_towers: bool

    @property
    def frames(self) -> int:
        return int(self.seconds * self.fps)


PRESETS = {
    "tiny": Preset(spec={}, rows=24, seconds=2.0, fps=4, size=112, batch=2, answer_words=0, freeze_towers=False),
    "compute": Preset(
        spec={"hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 8, "num_attention_heads": 8,
              "num_key_value_heads": 4, "vision_hidden_size": 64, "vision_depth": 2, "audio_d_model": 64,
              "audio_layers": 2, "image_max_pixels": 224 * 224},
        rows=12, seconds=8.0, fps=4, size=224, batch=1, answer_words=16, freeze_towers=True,
    ),
}


# ------------------------------------------------------------------ the data and the model
FILLER = ("it keeps the same speed and the same colour all the way across the frame while the sound goes on "
          "steadily in the background of the clip").split()


def make_bench_data(folder: Path, preset: Preset, frames: int | None = None) -> Path:
    """Generated rows: a moving-shape clip and a tone per row, visual and audio questions alternating."""
    from groundpo.testing.media import write_shape_video, write_tone_wav

    seconds = (frames / preset.fps) if frames else preset.seconds
    shapes, colours = ["circle", "square", "triangle"], ["red", "blue", "green", "yellow"]
    sounds = ["low_hum", "high_beeps", "noise_bursts", "rising_tone"]
    directions = ["left_to_right", "right_to_left", "top_to_bottom", "bottom_to_top"]
    media = folder / "media"
    filler = " ".join((FILLER * 4)[: preset.answer_words])
    tail = f" {filler[0].upper()}{filler[1:]}." if filler else ""
    records = []
    for i in range(preset.rows):
        shape, colour, sound = shapes[i % 3], colours[i % 4], sounds[(i + 1) % 4]
        write_shape_video(media / f"b{i:03d}.mp4", shape=shape, colour=colour, direction=directions[i % 4],
                          seconds=seconds, fps=preset.fps, size=preset.size)
        write_tone_wav(media / f"b{i:03d}.wav", kind=sound, seconds=seconds, sample_rate=16000, seed=i)
        modality = "visual" if i % 2 == 0 else "audio"
        question = "What colour is the moving shape?" if modality == "visual" else "What do you hear?"
        chosen = f"The {shape} is {colour}." if modality == "visual" else f"I hear a {sound.replace('_', ' ')}."
        rejected = f"I see a {sound.replace('_', ' ')}." if modality == "visual" else f"I hear a {colour} {shape}."
        records.append({
            "conversations": [{"from": "human", "value": f"<video><audio>{question}"}],
            "chosen": {"from": "gpt", "value": chosen + tail}, "rejected": {"from": "gpt", "value": rejected + tail},
            "videos": [f"media/b{i:03d}.mp4"], "audios": [f"media/b{i:03d}.wav"], "modality": modality,
        })
    (folder / "bench.json").write_text(json.dumps(records, indent=1))
    columns = {"messages": "conversations", "chosen": "chosen", "rejected": "rejected", "videos": "videos",
               "audios": "audios", "modality": "modality"}
    tags = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"}
    info = {"bench": {"file_name": "bench.json", "formatting": "sharegpt", "ranking": True,
                      "columns": columns, "tags": tags}}
    (folder / "dataset_info.json").write_text(json.dumps(info, indent=1))
    return folder


def bench_config(model: Path, data: Path, out: Path, steps: int, cuda: bool, preset: Preset, frames: int, **stage) -> dict:
    pixels = preset.size * preset.size
    config = {
        "model_name_or_path": str(model), "template": "qwen2_omni", "trust_remote_code": False,
        "image_max_pixels": pixels, "video_max_pixels": pixels, "video_fps": float(preset.fps), "video_maxlen": frames,
        "do_train": True, "finetuning_type": "full", "freeze_vision_tower": preset.freeze_towers,
        "dataset": "bench", "dataset_dir": str(data), "cutoff_len": 4096, "overwrite_cache": True,
        "preprocessing_num_workers": 1, "dataloader_num_workers": 0,
        "output_dir": str(out), "save_strategy": "no", "overwrite_output_dir": True, "report_to": "none",
        "logging_steps": 1, "per_device_train_batch_size": preset.batch, "learning_rate": 1e-4, "max_steps": steps,
        "lr_scheduler_type": "constant", "seed": 0, "disable_gradient_checkpointing": True,
    }
    config.update({"bf16": True} if cuda else {"use_cpu": True})
    config.update(stage)
    return config


# ------------------------------------------------------------------ one variant, in its own process
def allocated_bytes_reader():
    """Bytes currently allocated through glibc malloc (arena in use + mmapped), or RSS as a fallback."""
    import ctypes
    import ctypes.util

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.mallinfo2.restype = MallInfo2
        libc.mallinfo2()
    except (OSError, AttributeError):
        import psutil

        process = psutil.Process()
        return lambda: process.memory_info().rss

    def read() -> int:
        info = libc.mallinfo2()
        return info.uordblks + info.hblkhd

    return read


def worker(config_path: str, result_path: str) -> None:
    import torch
    from transformers import TrainerCallback

    from llamafactory.train.tuner import run_exp

    config = json.loads(Path(config_path).read_text())
    cuda = bool(config.get("bf16"))
    allocated = allocated_bytes_reader()

    class StepStats(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []
            self.base_bytes = 0
            self.peak_bytes = 0
            self._stop = threading.Event()
            self.parts: list[dict[str, float]] = [{}]  # seconds per part, one dict per step (the last is open)
            self._mark: float | None = None  # end of the last step, until the next step's first forward

        def _sample(self):
            while not self._stop.is_set():
                self.peak_bytes = max(self.peak_bytes, allocated())
                time.sleep(0.001)

        def _add(self, part: str, seconds: float) -> None:
            self.parts[-1][part] = self.parts[-1].get(part, 0.0) + seconds

        def _instrument(self, model) -> None:
            """Time every forward of the towers and the LLM, the policy's and the reference's (their
            classes' ``forward`` is wrapped: the reference model is not handed to callbacks, and a
            tower output that the engine reuses costs nothing), and the time from the end of a step to
            its successor's first forward (loading, collating, building views)."""
            import functools

            from groundpo.train.encodings import find_towers

            parts = {type(tower): f"{name} forward" for name, tower in find_towers(model).items()}
            decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
            if decoder is not None:
                parts[type(decoder)] = "LLM forward"

            def timed(forward, part):
                @functools.wraps(forward)
                def wrapper(*args, **kwargs):
                    start = time.perf_counter()
                    if self._mark is not None:  # the step's first forward: loading, collation and views are done
                        self._add("data + views (before the first forward)", start - self._mark)
                        self._mark = None
                    try:
                        return forward(*args, **kwargs)
                    finally:
                        if cuda:
                            torch.cuda.synchronize()
                        name = part if part != "LLM forward" else f"LLM forward ({'grad' if torch.is_grad_enabled() else 'no grad'})"
                        self._add(name, time.perf_counter() - start)

                return wrapper

            for kind, part in parts.items():
                kind.forward = timed(kind.forward, part)

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            self._optimizer_started = time.perf_counter()

        def on_optimizer_step(self, args, state, control, **kwargs):
            self._add("optimizer", time.perf_counter() - self._optimizer_started)

        def on_train_begin(self, args, state, control, **kwargs):
            try:
                self._instrument(kwargs["model"])
            except Exception as e:  # the breakdown is a bonus: never let it stop the timing
                print(f"[bench] no time breakdown: {e}", file=sys.stderr)
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            self.base_bytes = self.peak_bytes = allocated()
            threading.Thread(target=self._sample, daemon=True).start()
            self.ends.append(time.perf_counter())
            self._mark = self.ends[-1]

        def on_step_end(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            self.ends.append(time.perf_counter())
            self.parts.append({})
            self._mark = self.ends[-1]

        def on_train_end(self, args, state, control, **kwargs):
            self._stop.set()

    stats = StepStats()
    run_exp(config, callbacks=[stats])
    durations = [b - a for a, b in zip(stats.ends, stats.ends[1:])]
    peak = torch.cuda.max_memory_allocated() if cuda else stats.peak_bytes - stats.base_bytes
    parts = stats.parts[: len(durations)]  # parts[i] happened during durations[i] (collation of step i included)
    Path(result_path).write_text(json.dumps({"durations": durations, "parts": parts, "peak_bytes": peak, "cuda": cuda}))


def run_variant(name: str, config: dict, folder: Path) -> dict:
    cfg = folder / f"{name}.json"
    cfg.write_text(json.dumps(config))
    result = folder / f"{name}.result.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LLAMAFACTORY_VERBOSITY": "WARN"}
    proc = subprocess.run([sys.executable, __file__, "--worker", str(cfg), str(result)], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-4000:]}")
    return json.loads(result.read_text())


def measure(name: str, config: dict, folder: Path, warmup: int) -> dict:
    raw = run_variant(name, config, folder)
    steps = raw["durations"][warmup:]
    timed = raw.get("parts", [])[warmup:]
    # mean seconds per step of each part; the rest of the step (backward, loss, views, bookkeeping) is what remains
    names = sorted({k for p in timed for k in p})
    parts = {k: statistics.mean(p.get(k, 0.0) for p in timed) for k in names} if timed else {}
    if parts:
        parts["backward + rest"] = statistics.mean(steps) - sum(parts.values())
    return {"median_step_s": statistics.median(steps), "peak_mb": raw["peak_bytes"] / 2**20, "steps_timed": len(steps),
            "parts_s": parts}


def with_ratios(results: dict) -> dict:
    base = results["dpo"]
    for r in results.values():
        r["time_ratio"] = r["median_step_s"] / base["median_step_s"]
        r["memory_ratio"] = r["peak_mb"] / base["peak_mb"] if base["peak_mb"] > 0 else float("nan")
    return results


def print_table(results: dict, device: str) -> None:
    print(f"\ndevice: {device}")
    print(f"{'variant':<11} {'median step (s)':>16} {'peak memory (MB)':>17} {'time / dpo':>11} {'memory / dpo':>13}")
    for name, r in results.items():
        print(f"{name:<11} {r['median_step_s']:>16.4f} {r['peak_mb']:>17.1f} {r['time_ratio']:>11.2f} {r['memory_ratio']:>13.2f}")
    parts = sorted({k for r in results.values() for k in r.get("parts_s", {})}, key=lambda k: (k == "backward + rest", k))
    if parts:
        print("\nwhere a step's time goes (mean seconds per step):")
        print(f"{'part':<24} " + " ".join(f"{name:>11}" for name in results))
        for part in parts:
            print(f"{part:<24} " + " ".join(f"{r.get('parts_s', {}).get(part, 0.0):>11.2f}" for r in results.values()))


def check_budgets(results: dict, preset: str) -> bool:
    ok = True
    for (variant, what), bound in BUDGETS[preset].items():
        value = results[variant][f"{what}_ratio"]
        fine = value <= bound
        ok &= fine
        print(f"{variant} / dpo: {'step time' if what == 'time' else 'peak memory'} {value:.2f} "
              f"(budget {bound}: {'ok' if fine else 'OVER'})")
    return ok


def plot_sweep(sweep: dict, path: Path, device: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(10, 4))
    for variant, points in sweep.items():
        frames = [p["frames"] for p in points]
        ax_time.plot(frames, [p["median_step_s"] for p in points], marker="o", label=variant)
        ax_mem.plot(frames, [p["peak_mb"] for p in points], marker="o", label=variant)
    for ax, label in ((ax_time, "median step time (s)"), (ax_mem, "peak memory (MB)")):
        ax.set_xlabel("video frames per prompt")
        ax.set_ylabel(label)
        ax.set_xscale("log", base=2)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(f"upstream dpo vs MoD-DPO++ (groundpo engine), {device}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated (default: all)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per variant (default 20 tiny, 8 compute)")
    parser.add_argument("--warmup", type=int, default=None, help="steps left out of the median (default 4 tiny, 2 compute)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--sweep", choices=["frames"], help="step time and peak memory against the number of frames")
    parser.add_argument("--frames", default=",".join(map(str, SWEEP_FRAMES)),
                        help=f"with --sweep: comma-separated frame counts (default: {','.join(map(str, SWEEP_FRAMES))})")
    parser.add_argument("--plot", help="with --sweep: draw the curves to this PNG")
    parser.add_argument("--out", help="also write the results as JSON to this file")
    parser.add_argument("--check", action="store_true", help="exit 1 if a ratio exceeds its budget")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(*args.worker)

    import torch

    from groundpo.testing.tiny_omni import TinyOmniSpec, build_tiny_omni

    preset = PRESETS[args.preset]
    steps = args.steps or (20 if args.preset == "tiny" else 8)
    warmup = args.warmup if args.warmup is not None else (4 if args.preset == "tiny" else 2)
    cuda = torch.cuda.is_available() if args.device == "auto" else args.device == "cuda"
    device = (torch.cuda.get_device_name() + ", bf16") if cuda else f"CPU ({os.cpu_count()} cores), float32"
    variants = [v for v in args.variants.split(",") if v]
    with tempfile.TemporaryDirectory(prefix="groundpo-bench-") as tmp:
        folder = Path(tmp)
        print(f"building the {args.preset} model and the bench data ...", flush=True)
        model = build_tiny_omni(folder / "model", TinyOmniSpec(**preset.spec))
        if args.sweep:
            sweep: dict[str, list] = {v: [] for v in SWEEP_VARIANTS}
            frame_counts = [int(f) for f in args.frames.split(",")]
            for frames in frame_counts:
                data = make_bench_data(folder / f"data{frames}", preset, frames=frames)
                for name in SWEEP_VARIANTS:
                    print(f"{frames} frames: {name} ({steps} steps) ...", flush=True)
                    config = bench_config(model, data, folder / f"{name}{frames}", steps, cuda, preset, frames, **VARIANTS[name])
                    sweep[name].append({"frames": frames, **measure(f"{name}{frames}", config, folder, warmup)})
            print(f"\ndevice: {device}\n{'frames':>6} " + " ".join(f"{v + ' s':>12} {v + ' MB':>12}" for v in sweep))
            for i, frames in enumerate(frame_counts):
                print(f"{frames:>6} " + " ".join(f"{sweep[v][i]['median_step_s']:>12.3f} {sweep[v][i]['peak_mb']:>12.1f}" for v in sweep))
            if args.plot:
                plot_sweep(sweep, Path(args.plot), device)
            if args.out:
                Path(args.out).write_text(json.dumps({"device": device, "preset": args.preset, "sweep": sweep}, indent=2))
            return
        data = make_bench_data(folder / "data", preset)
        results = {}
        for name in variants:
            print(f"running {name} ({steps} steps) ...", flush=True)
            config = bench_config(model, data, folder / name, steps, cuda, preset, preset.frames, **VARIANTS[name])
            results[name] = measure(name, config, folder, warmup)

    print_table(with_ratios(results), device)
    ok = check_budgets(results, args.preset) if all(v in results for v, _ in BUDGETS[args.preset]) else True
    if args.out:
        Path(args.out).write_text(json.dumps({"device": device, "preset": args.preset, "results": results}, indent=2))
    if args.check and not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
