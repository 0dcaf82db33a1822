"""The MiniAVH pipeline: one command, resumable stage by stage, with progress.

Stages, each recorded in ``state/done/<stage>.json`` when it finishes (a rerun skips it):

1. ``world``: the clips, the base SFT rows and the held-out AVHBench-format set;
2. ``pref``: the preference data (MoD-DPO's recipe, the same rows for every method);
3. ``model``, ``sft``, ``eval-base``: the initial model, the base SFT, its evaluation;
4. ``train-<run>``, ``eval-<run>``: every method x epochs x seed, trained from the base model and
   evaluated with ``groundpo-eval avhbench``;
5. ``report``: tables and plot (always rewritten).

Stages 3-4 run in one worker process (:mod:`.worker`) unless ``isolate`` is set, in which case
every training is its own ``llamafactory-cli train configs/<job>.yaml`` and every evaluation its
own ``groundpo-eval`` process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from . import world as W
from .plan import Size, jobs
from .worker import marker, write_marker

RUN_CONFIG = "run_config.json"
HEARTBEAT_S = 30.0


class RunConfigMismatch(RuntimeError):
    pass


def _fmt_s(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    """Numbered stage lines with elapsed time, on stdout (flushed)."""

    def __init__(self, total: int, echo=print) -> None:
        self.total, self.done, self.start, self.echo = total, 0, time.time(), echo

    def line(self, text: str) -> None:
        self.echo(f"[miniavh {_fmt_s(time.time() - self.start)}] {text}", flush=True)

    def finished(self, label: str, wall_s: float | None, skipped: bool = False) -> None:
        self.done += 1
        what = "done before" if skipped else f"done in {_fmt_s(wall_s or 0)}"
        self.line(f"[{self.done:>2}/{self.total}] {label}: {what}")


def _changed_settings(root: Path, size: Size) -> list[str]:
    """The settings in which the run stored in ``root`` differs from ``size`` (none: the same run)."""
    found = json.loads((root / RUN_CONFIG).read_text(encoding="utf-8"))
    wanted = json.loads(json.dumps(size.fingerprint()))  # as stored: tuples become lists
    return sorted(k for k in set(found) | set(wanted) if found.get(k) != wanted.get(k))


def _check_run_config(root: Path, size: Size, overwrite: bool) -> None:
    path = root / RUN_CONFIG
    wanted = size.fingerprint()
    if path.exists() and not overwrite and (keys := _changed_settings(root, size)):
        raise RunConfigMismatch(
            f"{root} holds a run with other settings ({', '.join(keys)}); use another --output_dir or --overwrite"
        )
    if overwrite and root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(wanted, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _stage(root: Path, progress: Progress, name: str, label: str, fn) -> dict | None:
    if marker(root, name).exists():
        progress.finished(label, None, skipped=True)
        return None
    start = time.time()
    result = fn()
    wall = time.time() - start
    write_marker(root, name, wall)
    progress.finished(label, wall)
    return result


def _job_status(root: Path, job) -> str:
    """A short progress note of a running job, read from its files."""
    out = Path(job.output_dir)
    if job.kind == "train":
        log = out / "trainer_log.jsonl"
        if log.exists():
            lines = log.read_text(encoding="utf-8").strip().splitlines()
            if lines:
                last = json.loads(lines[-1])
                return f"step {last.get('current_steps')}/{last.get('total_steps')}"
        return "loading"
    if job.kind == "eval":
        pred = out / "predictions.jsonl"
        n = sum(1 for _ in pred.open(encoding="utf-8")) if pred.exists() else 0
        return f"{n}/{job.progress_total} answers"
    return "running"


def _env() -> dict:
    env = dict(os.environ)
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        env[key] = "1"
    env.setdefault("WANDB_DISABLED", "true")
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return env


def _tail(path: Path, n: int = 40) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-n:])


def _run_jobs(root: Path, job_list, progress: Progress, isolate: bool) -> None:
    pending = [j for j in job_list if not marker(root, j.name).exists()]
    for j in job_list:
        if j not in pending:
            progress.finished(j.label, None, skipped=True)
    if not pending:
        return
    spec = {"root": str(root), "jobs": [j.__dict__ for j in job_list]}
    spec_path = root / "state" / "jobs.json"
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(json.dumps(spec, indent=1) + "\n", encoding="utf-8")
    env = _env()
    worker = [sys.executable, "-m", "groundpo.miniavh.worker", str(spec_path)]
    bin_dir = Path(sys.executable).parent
    if isolate:
        for job in pending:
            if job.kind == "train":
                cmd = [str(bin_dir / "llamafactory-cli"), "train", str(root / "configs" / f"{job.name}.yaml")]
            elif job.kind == "eval":
                cmd = [str(bin_dir / "groundpo-eval"), *job.config["argv"]]
            else:
                cmd = [*worker, "--only", job.name]
            _watch(root, [job], progress, cmd, env, per_job_log=True)
    else:
        _watch(root, pending, progress, worker, env, per_job_log=False)


def _watch(root: Path, pending, progress: Progress, cmd: list[str], env: dict, per_job_log: bool) -> None:
    """Run ``cmd`` and report each pending job as its marker appears; a heartbeat line every
    ``HEARTBEAT_S`` seconds says where the current job is."""
    log_path = root / "logs" / (f"{pending[0].name}.log" if per_job_log else "worker.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    remaining = list(pending)
    started = {remaining[0].name: time.time()}
    last_beat = time.time()
    with open(log_path, "a", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=os.getcwd())
        while True:
            rc = proc.poll()
            if per_job_log and rc == 0 and remaining:
                job = remaining[0]
                write_marker(root, job.name, time.time() - started[job.name])
            while remaining and marker(root, remaining[0].name).exists():
                job = remaining.pop(0)
                wall = json.loads(marker(root, job.name).read_text(encoding="utf-8"))["wall_s"]
                progress.finished(job.label, wall)
                if remaining:
                    started.setdefault(remaining[0].name, time.time())
                last_beat = time.time()
            if rc is not None:
                break
            if remaining and time.time() - last_beat >= HEARTBEAT_S:
                job = remaining[0]
                progress.line(f"       {job.label}: {_job_status(root, job)} ({_fmt_s(time.time() - started[job.name])})")
                last_beat = time.time()
            time.sleep(1.0)
    if rc != 0 or remaining:
        job = remaining[0] if remaining else pending[-1]
        detail = _tail(root / "logs" / f"{job.name}.log") or _tail(log_path)
        raise RuntimeError(f"job {job.name} failed (exit status {rc}); its log ends with:\n{detail}\n"
                           f"Run the same command again to continue from this job.")


def run(size: Size, output_dir: str | os.PathLike, *, overwrite: bool = False, isolate: bool = False, echo=print) -> Path:
    """Run (or continue) the whole comparison; returns the folder of the results."""
    from .report import write_report

    root = Path(output_dir).resolve()
    _check_run_config(root, size, overwrite)
    n_test_items = 5 * size.n_test
    job_list = jobs(size, root, n_test_items)
    progress = Progress(total=2 + len(job_list) + 1, echo=echo)
    progress.line(f"MiniAVH '{size.name}' in {root}: {len(size.methods)} methods x {len(size.seeds)} seed(s), "
                  f"{len(job_list)} jobs")
    world_dir = root / "world"
    _stage(root, progress, "world", "world: clips, base SFT rows, held-out AVHBench set", lambda: W.write_world(
        world_dir, seed=size.world_seed, n_sft=size.n_sft, n_test=size.n_test, p=size.p, questions_per_clip=size.questions_per_clip,
    ))
    _stage(root, progress, "pref", "preference data (MoD-DPO recipe)", lambda: W.write_preferences(
        world_dir, seed=size.world_seed, n_pref=size.n_pref, mismatch_ratio=size.mismatch_ratio,
    ))
    configs = root / "configs"
    configs.mkdir(exist_ok=True)
    for job in job_list:
        if job.kind == "model":
            job.config = {"spec": {**size.model, "extra_corpus": W.corpus()}}
        elif job.kind == "train":
            (configs / f"{job.name}.yaml").write_text(yaml.safe_dump(job.config, sort_keys=False), encoding="utf-8")
    _run_jobs(root, job_list, progress, isolate)
    start = time.time()
    results = write_report(root, size)
    progress.finished(f"report: {results / 'summary.md'}", time.time() - start)
    return results


def report_only(size: Size, output_dir: Path) -> Path:
    """Tables and plot from the evaluations finished so far in ``output_dir`` (a run of ``size``)."""
    from .report import write_report

    root = Path(output_dir).resolve()
    path = root / RUN_CONFIG
    if not path.exists() or not marker(root, "eval-base").exists():
        raise FileNotFoundError(f"{root} holds no run with an evaluated base model yet")
    if keys := _changed_settings(root, size):
        raise RunConfigMismatch(
            f"{root} holds a run with other settings ({', '.join(keys)}); give the same options as when it was started"
        )
    return write_report(root, size)
