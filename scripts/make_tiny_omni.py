"""Build the tiny offline Qwen2.5-Omni checkpoint used by the tests and the demo.

    .venv/bin/python scripts/make_tiny_omni.py --out saves/tiny-omni

Deterministic (same bytes for the same seed) and offline; takes a few seconds on a CPU.
"""

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder to write the checkpoint to")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights (default 0)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the folder holds a checkpoint")
    args = parser.parse_args()

    from groundpo.testing.tiny_omni import TinyOmniSpec, build_tiny_omni

    if os.path.exists(os.path.join(args.out, "model.safetensors")) and not args.force:
        print(f"{args.out} already holds a checkpoint (use --force to rebuild).")
        return
    path = build_tiny_omni(args.out, TinyOmniSpec(seed=args.seed))
    print(f"Tiny Qwen2.5-Omni written to {path}")


if __name__ == "__main__":
    main()
