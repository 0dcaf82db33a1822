"""groundpo: modality-grounded preference optimisation stages for LLaMA-Factory 0.9.5.

Besides the package, the install drops one file into site-packages, ``groundpo_overlay.pth``:
one line that Python's ``site`` runs at every interpreter start-up. It installs an import hook
(``groundpo.integration.bootstrap``) that patches LLaMA-Factory the moment its modules are
imported, so ``llamafactory-cli train``, its torchrun children and LlamaBoard's training
subprocess all know our stages without a wrapper command.

How the file gets there: a regular wheel carries it at its root (``build_py`` copies it next to
the packages); an editable wheel gets it added after setuptools built it (setuptools does not put
``data_files`` into editable wheels). ``tests/test_install.py`` checks both.
"""

import base64
import hashlib
import shutil
import zipfile
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

ROOT = Path(__file__).parent
OVERLAY_PTH = "groundpo_overlay.pth"


class BuildPyWithOverlay(build_py):
    """Also place ``groundpo_overlay.pth`` at the root of the build (regular wheels)."""

    def run(self):
        super().run()
        if not self.editable_mode:
            shutil.copyfile(ROOT / "src" / OVERLAY_PTH, Path(self.build_lib) / OVERLAY_PTH)


class EditableWheelWithOverlay(editable_wheel):
    """Add ``groundpo_overlay.pth`` (and its RECORD line) to the editable wheel just built."""

    def run(self):
        super().run()
        wheels = sorted(Path(self.dist_dir).glob("*.editable-*.whl"), key=lambda p: p.stat().st_mtime)
        _add_to_wheel(wheels[-1], OVERLAY_PTH, (ROOT / "src" / OVERLAY_PTH).read_bytes())


def _add_to_wheel(wheel: Path, name: str, data: bytes) -> None:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    with zipfile.ZipFile(wheel) as zin:
        entries = [(info, zin.read(info)) for info in zin.infolist()]
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zout:
        zout.writestr(name, data)
        for info, content in entries:
            if info.filename.endswith(".dist-info/RECORD"):
                content = content.decode().rstrip("\n") + f"\n{name},sha256={digest},{len(data)}\n"
                content = content.encode()
            zout.writestr(info, content)

CORE = [
    "llamafactory==0.9.5",
    "torch==2.11.0",
    "torchvision==0.26.0",
    "torchaudio==2.11.0",
    "torchcodec==0.11.*",
    # the set llamafactory 0.9.5 resolves to with torch 2.11 (measured, see docs/environment.md)
    "transformers==5.6.0",
    "trl==0.24.0",
    "peft==0.18.1",
    "accelerate==1.11.0",
    "datasets==4.0.0",
    "av==16.0.0",  # video decoding (demo data, evaluation); what llamafactory 0.9.5 resolves to
    "pillow",
    "pyyaml",
    "numpy",
    "tqdm",
    "openai>=1.50",  # model endpoints (data building, judges): any OpenAI-compatible server
    "networkx==3.6.1",  # groundpo-data mfpo: the keyword graph and its weighted PageRank
    "filelock==4.3.2",  # groundpo-data: one build per output folder (also required by torch, datasets)
    "nltk==3.9.2",  # groundpo-eval amber: nouns and WordNet lemmas, as AMBER's scorer (its data: --nltk_data)
]

EXTRAS = {
    # LlamaBoard; llamafactory 0.9.5 already requires gradio, this pins what it resolves to
    "webui": ["gradio==5.50.0"],
    # ZeRO-3 for the 8-GPU paper configs; upstream caps deepspeed at 0.18.4
    "deepspeed": ["deepspeed>=0.10.0,<=0.18.4"],
    # wheel + setuptools: tests/test_install.py builds a wheel offline (no build isolation)
    # deepspeed: the CPU harness runs the paper configs' ZeRO-3 on DeepSpeed's CPU accelerator
    "dev": ["pytest>=8", "pytest-timeout", "playwright==1.56.0", "wheel", "setuptools>=70,<82", "deepspeed==0.18.4", "pytest-xdist==3.8.0"],
}

setup(
    name="groundpo",
    version="0.1.0",
    description="Modality-grounded preference optimisation (MoD-DPO, JoMPO, ACPO, MBPO, MFPO) for LLaMA-Factory",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8") if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11,<3.12",
    package_dir={"": "src"},
    packages=find_packages("src"),
    package_data={
        "groundpo.datagen": ["prompts/*/*.txt", "prompts/*/*.lines"],  # groundpo-data's editable prompts
        "groundpo.eval": ["data/*.txt"],  # groundpo-eval objhal: the COCO synonym table
    },
    cmdclass={"build_py": BuildPyWithOverlay, "editable_wheel": EditableWheelWithOverlay},
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": [
            "groundpo-eval=groundpo.eval.cli:main",
            "groundpo-data=groundpo.datagen.cli:main",
        ]
    },
)
