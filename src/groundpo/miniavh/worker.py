"""Runs a MiniAVH job list in one process: ``python -m groundpo.miniavh.worker JOBS.json``.

Trainings go through ``llamafactory.train.tuner.run_exp`` (what ``llamafactory-cli train`` calls)
and evaluations through ``groundpo.eval.cli.main`` (``groundpo-eval``), one after another in this
process, so that torch, transformers and LLaMA-Factory are imported once, not once per job.
Each job writes its output to ``logs/<job>.log`` and, when it succeeds, a marker
``state/done/<job>.json``; a job with a marker is skipped, so a killed worker, run again,
continues with the first unfinished job (a half-done training starts over, an evaluation resumes
at its first missing answer). ``--only NAME`` runs one job.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path


def marker(root: Path, job: str) -> Path:
    return root / "state" / "done" / f"{job}.json"


def write_marker(root: Path, job: str, wall_s: float) -> None:
    path = marker(root, job)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"job": job, "wall_s": round(wall_s, 2), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")
    os.replace(tmp, path)


@contextmanager
def output_to(path: Path):
    """Send this process's stdout and stderr (file descriptors 1 and 2) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a", encoding="utf-8") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def run_job(job: dict) -> None:
    if job["kind"] == "model":
        from ..testing.tiny_omni import TinyOmniSpec, build_tiny_omni

        build_tiny_omni(job["output_dir"], TinyOmniSpec(**job["config"]["spec"]))
    elif job["kind"] == "train":
        from llamafactory.train.tuner import run_exp

        run_exp(dict(job["config"]))
        if not (Path(job["output_dir"]) / "model.safetensors").is_file():
            raise RuntimeError(f"training finished without writing {job['output_dir']}/model.safetensors")
    elif job["kind"] == "eval":
        from ..eval.cli import main as groundpo_eval

        rc = groundpo_eval(list(job["config"]["argv"]))
        if rc != 0:
            raise RuntimeError(f"groundpo-eval exited with status {rc}")
    else:
        raise ValueError(f"unknown job kind {job['kind']!r}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    only = None
    if "--only" in argv:
        i = argv.index("--only")
        only = argv[i + 1]
        del argv[i : i + 2]
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    root = Path(spec["root"])
    for job in spec["jobs"]:
        if (only and job["name"] != only) or marker(root, job["name"]).exists():
            continue
        start = time.time()
        try:
            with output_to(root / "logs" / f"{job['name']}.log"):
                print(f"[miniavh worker] {job['label']}", flush=True)
                run_job(job)
        except BaseException:  # noqa: BLE001 - the job's log gets the traceback; the parent reports it
            with open(root / "logs" / f"{job['name']}.log", "a", encoding="utf-8") as log:
                log.write(traceback.format_exc())
            print(f"[miniavh worker] FAILED: {job['name']} (see {root / 'logs' / (job['name'] + '.log')})", file=sys.stderr, flush=True)
            return 1
        write_marker(root, job["name"], time.time() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
