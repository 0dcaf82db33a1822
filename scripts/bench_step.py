"""Benchmark: step time and peak memory of upstream dpo, mod_dpo (γ=0) and mod_dpo++ (γ=0.05).

A benchmark, not a test. All three variants train the same tiny-but-not-trivial config in one run:
the tiny offline Qwen2.5-Omni (a few hundred thousand parameters), 8 video frames (2 s at 4 fps,
112×112) and 2 s of 16 kHz audio per row, batch 2. Each variant runs in its own process; the
script prints median step time (full iterations: data loading, all passes, backward, optimizer)
and peak memory, and the ratios against dpo.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_step.py [--steps 20] [--check]

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` during training (bf16); on CPU, the peak of
the bytes glibc's allocator has handed out (``mallinfo2``: heap in use + mmapped chunks), sampled
every millisecond, minus the value when training starts — the CPU analogue of allocated memory,
much steadier than the resident set size. Other processes on the machine distort CPU timings:
run it on a quiet machine. The budgets
(``--check``): peak memory of mod_dpo++ / dpo ≤ 1.15; step time ≤ 1.75, the FLOP ratio of
6+4 forwards and 2 backwards against DPO's 2+2 and 2 (MoD-DPO Tab. 7).
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
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VARIANTS = {
    "dpo": {"stage": "dpo"},
    "mod_dpo": {"stage": "mod_dpo", "mod_gamma_lpd": 0.0},
    "mod_dpo++": {"stage": "mod_dpo", "mod_gamma_lpd": 0.05},
}
BUDGETS = {"time": 1.75, "memory": 1.15}


# ------------------------------------------------------------------ the data and the model
def make_bench_data(folder: Path, rows: int = 24) -> Path:
    from groundpo.testing.media import write_shape_video, write_tone_wav

    shapes, colours = ["circle", "square", "triangle"], ["red", "blue", "green", "yellow"]
    sounds = ["low_hum", "high_beeps", "noise_bursts", "rising_tone"]
    directions = ["left_to_right", "right_to_left", "top_to_bottom", "bottom_to_top"]
    media = folder / "media"
    records = []
    for i in range(rows):
        shape, colour, sound = shapes[i % 3], colours[i % 4], sounds[(i + 1) % 4]
        write_shape_video(media / f"b{i:03d}.mp4", shape=shape, colour=colour, direction=directions[i % 4],
                          seconds=2.0, fps=4, size=112)
        write_tone_wav(media / f"b{i:03d}.wav", kind=sound, seconds=2.0, sample_rate=16000, seed=i)
        modality = "visual" if i % 2 == 0 else "audio"
        question = "What colour is the moving shape?" if modality == "visual" else "What do you hear?"
        chosen = f"The {shape} is {colour}." if modality == "visual" else f"I hear a {sound.replace('_', ' ')}."
        rejected = f"I see a {sound.replace('_', ' ')}." if modality == "visual" else f"I hear a {colour} {shape}."
        records.append({
            "conversations": [{"from": "human", "value": f"<video><audio>{question}"}],
            "chosen": {"from": "gpt", "value": chosen}, "rejected": {"from": "gpt", "value": rejected},
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


def bench_config(model: Path, data: Path, out: Path, steps: int, cuda: bool, **stage) -> dict:
    config = {
        "model_name_or_path": str(model), "template": "qwen2_omni", "trust_remote_code": False,
        "image_max_pixels": 112 * 112, "video_max_pixels": 112 * 112, "video_fps": 4.0, "video_maxlen": 8,
        "do_train": True, "finetuning_type": "full", "freeze_vision_tower": False,
        "dataset": "bench", "dataset_dir": str(data), "cutoff_len": 1024, "overwrite_cache": True,
        "preprocessing_num_workers": 1, "dataloader_num_workers": 0,
        "output_dir": str(out), "save_strategy": "no", "overwrite_output_dir": True, "report_to": "none",
        "logging_steps": 1, "per_device_train_batch_size": 2, "learning_rate": 1e-4, "max_steps": steps,
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

        def _sample(self):
            while not self._stop.is_set():
                self.peak_bytes = max(self.peak_bytes, allocated())
                time.sleep(0.001)

        def on_train_begin(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            self.base_bytes = self.peak_bytes = allocated()
            threading.Thread(target=self._sample, daemon=True).start()
            self.ends.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            self.ends.append(time.perf_counter())

        def on_train_end(self, args, state, control, **kwargs):
            self._stop.set()

    stats = StepStats()
    run_exp(config, callbacks=[stats])
    durations = [b - a for a, b in zip(stats.ends, stats.ends[1:])]
    peak = torch.cuda.max_memory_allocated() if cuda else stats.peak_bytes - stats.base_bytes
    Path(result_path).write_text(json.dumps({"durations": durations, "peak_bytes": peak, "cuda": cuda}))


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="training steps per variant (default 20)")
    parser.add_argument("--warmup", type=int, default=4, help="steps left out of the median (default 4)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--out", help="also write the results as JSON to this file")
    parser.add_argument("--check", action="store_true", help="exit 1 if a ratio exceeds its budget")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(*args.worker)

    import torch

    from groundpo.testing.tiny_omni import build_tiny_omni

    cuda = torch.cuda.is_available() if args.device == "auto" else args.device == "cuda"
    with tempfile.TemporaryDirectory(prefix="groundpo-bench-") as tmp:
        folder = Path(tmp)
        print("building the tiny model and the bench data ...", flush=True)
        model = build_tiny_omni(folder / "model")
        data = make_bench_data(folder / "data")
        results = {}
        for name, stage in VARIANTS.items():
            print(f"running {name} ({args.steps} steps) ...", flush=True)
            raw = run_variant(name, bench_config(model, data, folder / name, args.steps, cuda, **stage), folder)
            steps = raw["durations"][args.warmup:]
            results[name] = {
                "median_step_s": statistics.median(steps),
                "peak_mb": raw["peak_bytes"] / 2**20,
                "steps_timed": len(steps),
            }

    base = results["dpo"]
    device = torch.cuda.get_device_name() if cuda else f"CPU ({os.cpu_count()} cores), float32"
    print(f"\ndevice: {device}{', bf16' if cuda else ''}")
    print(f"{'variant':<11} {'median step (s)':>16} {'peak memory (MB)':>17} {'time / dpo':>11} {'memory / dpo':>13}")
    for name, r in results.items():
        r["time_ratio"] = r["median_step_s"] / base["median_step_s"]
        r["memory_ratio"] = r["peak_mb"] / base["peak_mb"] if base["peak_mb"] > 0 else float("nan")
        print(f"{name:<11} {r['median_step_s']:>16.4f} {r['peak_mb']:>17.1f} {r['time_ratio']:>11.2f} {r['memory_ratio']:>13.2f}")
    plus = results["mod_dpo++"]
    ok_time, ok_mem = plus["time_ratio"] <= BUDGETS["time"], plus["memory_ratio"] <= BUDGETS["memory"]
    print(f"\nmod_dpo++ / dpo: step time {plus['time_ratio']:.2f} (budget {BUDGETS['time']}: "
          f"{'ok' if ok_time else 'OVER'}), peak memory {plus['memory_ratio']:.2f} (budget {BUDGETS['memory']}: "
          f"{'ok' if ok_mem else 'OVER'})")
    if args.out:
        Path(args.out).write_text(json.dumps({"device": device, "results": results}, indent=2))
    if args.check and not (ok_time and ok_mem):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
