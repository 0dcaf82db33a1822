"""Build a tiny offline checkpoint used by the tests and the demo.

    .venv/bin/python scripts/make_tiny_omni.py --out saves/tiny-omni                    # Qwen2.5-Omni (default)
    .venv/bin/python scripts/make_tiny_omni.py --family qwen2_vl --out saves/tiny-qwen2-vl

Deterministic (same bytes for the same seed) and offline; takes a few seconds on a CPU.
"""

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

FAMILIES = {
    "qwen2_omni": ("Qwen2.5-Omni (template qwen2_omni)", "groundpo.testing.tiny_omni", "build_tiny_omni", "TinyOmniSpec"),
    "qwen2_vl": ("Qwen2-VL (template qwen2_vl)", "groundpo.testing.tiny_vl", "build_tiny_qwen2_vl", "TinyVLSpec"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder to write the checkpoint to")
    parser.add_argument("--family", choices=sorted(FAMILIES), default="qwen2_omni", help="model family (default qwen2_omni)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights (default 0)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the folder holds a checkpoint")
    args = parser.parse_args()

    from importlib import import_module

    name, module, build, spec = FAMILIES[args.family]
    if os.path.exists(os.path.join(args.out, "model.safetensors")) and not args.force:
        print(f"{args.out} already holds a checkpoint (use --force to rebuild).")
        return
    module = import_module(module)
    path = getattr(module, build)(args.out, getattr(module, spec)(seed=args.seed))
    print(f"Tiny {name} written to {path}")


if __name__ == "__main__":
    main()
