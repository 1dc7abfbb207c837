"""What every settings section may hold: one dataclass per YAML section, checked when settings
are loaded (:func:`selector.settings.load_settings`), not where they are used.

A field's type says what a value must be (``int``, ``float``, ``bool``, ``str``, ``Optional``,
``List[str]``, a nested section, or ``Dict[str, Any]`` for free-form blocks such as MiniGPT-4
config overrides); its metadata (:func:`setting`) says which values are allowed. Floats are always
finite. Defaults live in the shipped YAML files, not here: a field without a default must be set
by the shipped base (``MISSING``); the few fields with defaults are constructor arguments that the
shipped YAML leaves out, and a default here is never added to the settings a command receives.

Schemas are keyed by the shipped base they validate (``SCHEMAS``); the pipeline recipe's free-form
``selector`` and ``score.settings`` blocks are validated against the selector and indicator
schemas over their shipped bases (``NESTED``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

#: a field the shipped base YAML sets (no default of its own)
MISSING: Any = dataclasses.MISSING

PRECISIONS = ("fp32", "fp16", "bf16")
#: seeds are unsigned 32-bit integers (NumPy's legacy RandomState and scikit-learn refuse larger
#: ones, and a torch seed past 2**64 overflows): one range for every seed setting
SEED_LIMIT = 2 ** 32


def setting(default: Any = MISSING, *, min: Optional[float] = None, max: Optional[float] = None,
            above: Optional[float] = None, below: Optional[float] = None,
            choices: Optional[Tuple[str, ...]] = None, items: Optional[Tuple[str, ...]] = None,
            nonempty: bool = False, unique: bool = False, env_name: bool = False) -> Any:
    """A schema field: ``min``/``max`` inclusive and ``above``/``below`` exclusive bounds,
    ``choices`` for a string (or each of a list's ``items``), ``nonempty``/``unique`` lists,
    ``env_name``: the name of an environment variable (never its value: a key pasted there is not
    echoed back in the error)."""
    meta = {name: value for name, value in (
        ("min", min), ("max", max), ("above", above), ("below", below), ("choices", choices),
        ("items", items), ("nonempty", nonempty), ("unique", unique), ("env_name", env_name))
        if value is not None and value is not False}
    return field(default=default, metadata=meta)


# ---------------------------------------------------------------------------------------------
# selector/default.yaml (train-selector, select; the pipeline's `selector:` block)
# ---------------------------------------------------------------------------------------------

@dataclass
class ModelSection:
    mode: str = setting(choices=("default", "reference"))
    n_heads: int = setting(min=1)
    n_layers: int = setting(min=1)
    residual: bool = setting()
    context_size: int = setting(min=1)
    score_rounds: int = setting(min=1)
    score_seed: int = setting(min=0, below=SEED_LIMIT)


@dataclass
class TrainingSection:
    epochs: int = setting(min=1)
    lr: float = setting(above=0)
    weight_decay: float = setting(min=0)
    val_fraction: float = setting(min=0, below=1)
    patience: int = setting(min=0)
    seed: int = setting(min=0, below=SEED_LIMIT)
    cross_validate: bool = setting()


@dataclass
class SelectionSection:
    num_samples: int = setting(min=1)
    quota_total: Optional[int] = setting(min=1)
    n_clusters: int = setting(min=1)
    n_neighbors: int = setting(min=1)
    cluster_seed: int = setting(min=0, below=SEED_LIMIT)
    clustering: str = setting(choices=("auto", "exact", "scalable"))
    exact_max_samples: int = setting(min=1)
    micro_clusters: int = setting(min=1, max=10_000)
    graph_samples: int = setting(min=2)


@dataclass
class MethodBlock:
    """A selection method's block (``methods.<name>``, ``-`` written ``_``): ``diversity`` turns
    the selector's per-cluster quota step on or off for that method (``--diversity`` wins)."""

    diversity: bool = setting()


@dataclass
class ThresholdMethod(MethodBlock):
    fill: str = setting(choices=("random", "score"))  # how the eligible fill the budget


@dataclass
class LengthMethod(MethodBlock):
    unit: str = setting(choices=("words", "characters"))


@dataclass
class PerplexityMethod(MethodBlock):
    band: str = setting(choices=("low", "middle", "high"))
    lm: Dict[str, Any] = setting()  # indicators.perplexity settings changed for the method


@dataclass
class IfdMethod(MethodBlock):
    threshold: float = setting(above=0)  # IFD at or above it is never kept
    lm: Dict[str, Any] = setting()  # indicators.ifd settings changed for the method


@dataclass
class SemdedupMethod(MethodBlock):
    space: str = setting(choices=("image", "text", "both"))  # the embeddings compared
    n_clusters: Optional[int] = setting(min=1)  # null: pool size / 1000
    threshold: float = setting(above=-1, max=1)  # cosine above which samples are duplicates
    cluster_seed: int = setting(min=0, below=SEED_LIMIT)
    fill: str = setting()  # random | top:<indicator> (checked by the method)


@dataclass
class LinearMethod(MethodBlock):
    alpha: float = setting(min=0)  # ridge penalty on standardised subset means


@dataclass
class MethodsSection:
    """One block per selection method of ``igpt4 select --method`` (issue 14)."""

    random: MethodBlock = setting()
    cluster_random: MethodBlock = setting()
    top: MethodBlock = setting()
    bottom: MethodBlock = setting()
    threshold: ThresholdMethod = setting()
    length: LengthMethod = setting()
    perplexity: PerplexityMethod = setting()
    ifd: IfdMethod = setting()
    semdedup: SemdedupMethod = setting()
    linear: LinearMethod = setting()
    selector: MethodBlock = setting()


@dataclass
class SelectorSettings:
    model: ModelSection = setting()
    training: TrainingSection = setting()
    selection: SelectionSection = setting()
    methods: MethodsSection = setting()


# ---------------------------------------------------------------------------------------------
# indicators/default.yaml (score; the pipeline's `score.settings:` block)
# ---------------------------------------------------------------------------------------------

@dataclass
class ImageFeatures:
    """An open_clip image tower: the pool's image embeddings (``features.image``)."""

    model: str = setting()
    pretrained: Optional[str] = setting()
    model_config: Optional[str] = setting()
    batch_size: int = setting(min=1)
    num_workers: int = setting(min=0)
    precision: Optional[str] = setting(choices=PRECISIONS)
    device: Optional[str] = setting(None)


@dataclass
class ClipSettings(ImageFeatures):
    """The CLIP score: the same model options as the image features, plus its sentences."""

    max_sentences: int = setting(10, min=1)


@dataclass
class RewardSettings:
    model: str = setting()
    batch_size: int = setting(min=1)
    max_length: int = setting(min=1)
    precision: Optional[str] = setting(choices=PRECISIONS)
    device: Optional[str] = setting(None)


@dataclass
class LengthSettings:
    normaliser: float = setting(above=0)
    scale: float = setting(10.0, above=0)


@dataclass
class GptSettings:
    model: str = setting()
    temperature: float = setting(min=0)
    max_tokens: Optional[int] = setting(min=1)
    base_url: Optional[str] = setting()
    mode: str = setting(choices=("online", "batch"))
    concurrency: int = setting(min=1)
    timeout: float = setting(above=0)
    max_retries: int = setting(min=0)
    api_key_env: str = setting(env_name=True)
    poll_seconds: float = setting(above=0)
    expected_output_tokens: int = setting(min=0)
    input_price_per_1m: float = setting(min=0)
    output_price_per_1m: float = setting(min=0)
    prompt: Optional[str] = setting(None)
    batch_max_requests: int = setting(50_000, min=1, max=50_000)


@dataclass
class LanguageModelSettings:
    """A causal LM's scores (``perplexity``, ``ifd``): the model and how it is run."""

    model: str = setting()
    gguf_file: Optional[str] = setting()
    batch_size: int = setting(min=1)
    max_length: int = setting(min=2)
    precision: Optional[str] = setting(choices=PRECISIONS)
    device: Optional[str] = setting(None)


@dataclass
class IndicatorsSection:
    clip: ClipSettings = setting()
    reward: RewardSettings = setting()
    length: LengthSettings = setting()
    gpt: GptSettings = setting()
    perplexity: LanguageModelSettings = setting()
    ifd: LanguageModelSettings = setting()




@dataclass
class TextFeatures:
    kind: str = setting(choices=("causal_lm", "sentence_transformers"))
    model: str = setting()
    batch_size: int = setting(min=1)
    max_length: Optional[int] = setting(min=1)
    precision: Optional[str] = setting(choices=PRECISIONS)
    device: Optional[str] = setting(None)


@dataclass
class FeaturesSection:
    image: ImageFeatures = setting()
    text: TextFeatures = setting()
    pca_components: int = setting(min=1)
    pca_seed: int = setting(min=0, below=SEED_LIMIT)


@dataclass
class PoolSection:
    indicators: List[str] = setting(nonempty=True, unique=True)


@dataclass
class IndicatorSettings:
    indicators: IndicatorsSection = setting()
    features: FeaturesSection = setting()
    pool: PoolSection = setting()
    chunk_size: int = setting(min=1)


# ---------------------------------------------------------------------------------------------
# pipeline/base.yaml (igpt4 run recipes)
# ---------------------------------------------------------------------------------------------

STAGES = ("generate", "score", "split", "labels", "train_selector", "select", "report",
          "train_config", "compare")


@dataclass
class PipelineSection:
    work: str = setting()
    data: Optional[str] = setting()
    image_root: Optional[str] = setting()
    stages: List[str] = setting(items=STAGES, nonempty=True, unique=True)


@dataclass
class DemoSection:
    samples: int = setting(min=1)
    bad_fraction: float = setting(min=0, below=1)
    seed: int = setting(min=0, below=SEED_LIMIT)
    kind: str = setting(choices=("captions", "conversations"))
    label_steps: int = setting(min=1, below=100001)
    noise_repeats: int = setting(min=0, below=101)
    vqa_drawings: int = setting(min=1, below=100001)
    workers: int = setting(min=1, below=65)


@dataclass
class ScoreStage:
    indicators: Optional[List[str]] = setting(nonempty=True, unique=True)
    settings: Dict[str, Any] = setting()  # validated as IndicatorSettings (NESTED)
    pca_from: Optional[str] = setting()
    skip_invalid: bool = setting()
    strict: bool = setting()


@dataclass
class SplitStage:
    k: int = setting(min=1)
    seed: int = setting(min=0, below=SEED_LIMIT)
    template: Optional[str] = setting()
    slurm: bool = setting()
    drop_remainder: bool = setting()


@dataclass
class LabelsStage:
    source: str = setting(choices=("collect", "file", "oracle", "toy_finetune"))
    file: Optional[str] = setting()
    subsets: Optional[str] = setting()
    datasets: List[str] = setting(nonempty=True, unique=True)
    allow_missing: bool = setting()


@dataclass
class SelectStage:
    num_samples: int = setting(min=1)


@dataclass
class ReportStage:
    examples: int = setting(min=0)


@dataclass
class TrainConfigStage:
    template: Optional[str] = setting()
    set: Dict[str, Any] = setting()  # MiniGPT-4 config keys: free-form


@dataclass
class CompareStage:
    methods: List[str] = setting(nonempty=True, unique=True)
    seeds: int = setting(min=1, below=1001)
    steps: int = setting(min=1, below=100001)
    full: bool = setting()


@dataclass
class RecipeSettings:
    pipeline: PipelineSection = setting()
    demo: DemoSection = setting()
    score: ScoreStage = setting()
    split: SplitStage = setting()
    labels: LabelsStage = setting()
    selector: Dict[str, Any] = setting()  # validated as SelectorSettings (NESTED)
    select: SelectStage = setting()
    report: ReportStage = setting()
    train_config: TrainConfigStage = setting()
    compare: CompareStage = setting()


#: shipped base -> the schema of the settings merged over it
SCHEMAS = {"selector/default.yaml": SelectorSettings,
           "indicators/default.yaml": IndicatorSettings,
           "pipeline/base.yaml": RecipeSettings}
#: free-form blocks of a schema validated as another base's settings: base -> {path: base}
NESTED = {"pipeline/base.yaml": {("selector",): "selector/default.yaml",
                                 ("score", "settings"): "indicators/default.yaml"}}
