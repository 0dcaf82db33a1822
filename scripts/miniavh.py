#!/usr/bin/env python
"""MiniAVH: does MoD-DPO reduce cross-modal hallucination better than DPO and OmniDPO? (docs/miniavh.md)

    .venv/bin/python scripts/miniavh.py            # the default size: base SFT ~10 min + 18 trainings and 19 evaluations on 2 CPU cores
    .venv/bin/python scripts/miniavh.py --quick    # every stage at a toy size
"""

import sys

from groundpo.miniavh.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
