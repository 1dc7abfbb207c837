"""selector.scoring.embedders: the embedder registry (created by name, as the indicators are).

Creating an embedder loads no model (that happens on the first ``embed``), so these tests need
neither torch models nor transformers and run in milliseconds.
"""
from __future__ import annotations

import pytest

from selector.core.errors import InputError
from selector.core.settings import load_settings
from selector.scoring import embedders
from selector.scoring.embedders import (CausalLMTextEmbedder, ClipImageEmbedder, Embedder,
                                        SentenceTransformerTextEmbedder, create_embedder,
                                        embedder_names, register)
from selector.core.cache import settings_hash

# The cache keys of the shipped defaults (configs/indicators/default.yaml), computed by the code
# before the registry: an existing user's cached embeddings must stay valid.
DEFAULT_KEYS = {"image": "1e7714bb112bb188", "text": "3c59c9b8b19bbb0b"}


def test_the_registered_names_are_listed_by_kind():
    assert embedder_names() == ["causal_lm", "clip_image", "sentence_transformers"]
    assert embedder_names("text") == ["causal_lm", "sentence_transformers"]
    assert embedder_names("image") == ["clip_image"]
    assert embedder_names("audio") == []
    assert (ClipImageEmbedder.name, CausalLMTextEmbedder.name,
            SentenceTransformerTextEmbedder.name) == ("clip_image", "causal_lm",
                                                      "sentence_transformers")


def test_an_unknown_name_is_one_line_naming_it_and_the_known_ones():
    with pytest.raises(InputError) as caught:
        create_embedder("bert", model="x")
    message = str(caught.value)
    assert "\n" not in message and "'bert'" in message
    assert message.endswith("(known: causal_lm, clip_image, sentence_transformers)")


def test_a_setting_it_does_not_take_is_one_line_naming_its_block():
    with pytest.raises(InputError, match=r"^features\.text: .*'colour'") as caught:
        create_embedder("causal_lm", colour="red")
    assert "\n" not in str(caught.value)
    with pytest.raises(InputError, match=r"^features\.image: .*'kind'"):
        create_embedder("clip_image", kind="image")


@pytest.mark.parametrize("name, cls, settings", [
    ("clip_image", ClipImageEmbedder,
     {"model": "m", "pretrained": None, "model_config": "c.json", "batch_size": 3,
      "num_workers": 0, "device": "cpu", "precision": "fp32", "progress": False}),
    ("causal_lm", CausalLMTextEmbedder,
     {"model": "llama", "batch_size": 2, "max_length": 64, "device": "cpu", "precision": "bf16",
      "progress": False}),
    ("sentence_transformers", SentenceTransformerTextEmbedder,
     {"model": "minilm", "batch_size": 5, "max_length": 128, "progress": False}),
    ("causal_lm", CausalLMTextEmbedder, {}),
])
def test_created_by_name_equals_direct_construction(name, cls, settings):
    made = create_embedder(name, **settings)
    direct = cls(**settings)
    assert type(made) is cls and made.name == name
    assert made.settings() == direct.settings()
    assert vars(made) == vars(direct)
    assert settings_hash(f"embedding:{made.kind}", made.settings()) == \
        settings_hash(f"embedding:{direct.kind}", direct.settings())


def test_the_shipped_defaults_keep_their_cache_keys():
    from selector.scoring.score import _embedders

    image, text = _embedders(load_settings(base="indicators/default.yaml"), progress=False)
    assert (image.name, image.kind, text.name, text.kind) == ("clip_image", "image", "causal_lm",
                                                              "text")
    for embedder in (image, text):
        key = settings_hash(f"embedding:{embedder.kind}", embedder.settings())
        assert key == DEFAULT_KEYS[embedder.kind], embedder.name


def test_the_text_kind_setting_names_the_text_embedder():
    from selector.scoring.score import _embedders

    settings = load_settings(base="indicators/default.yaml")
    settings["features"]["text"] = {"kind": "sentence_transformers", "model": "minilm"}
    assert type(_embedders(settings, progress=False)[1]) is SentenceTransformerTextEmbedder
    settings["features"]["text"] = {"model": "llama"}  # no kind: the paper's causal LM
    assert type(_embedders(settings, progress=False)[1]) is CausalLMTextEmbedder
    settings["features"]["text"] = {"kind": "clip_image"}  # registered, but not a text embedder
    with pytest.raises(InputError, match=r"^features\.text\.kind must be one of causal_lm, "
                                         r"sentence_transformers \(got 'clip_image'\)$"):
        _embedders(settings, progress=False)


def test_a_registered_embedder_is_created_by_its_name(monkeypatch):
    monkeypatch.setattr(embedders.REGISTRY, "_classes", dict(embedders.REGISTRY._classes))  # leave no trace

    @register("constant")
    class Constant(Embedder):
        kind = "text"

        def __init__(self, width: int = 2, progress: bool = True) -> None:
            self.width = width

        def settings(self):
            return {"encoder": "constant", "width": self.width}

    made = create_embedder("constant", width=4)
    assert isinstance(made, Constant) and made.name == "constant" and made.width == 4
    assert "constant" in embedder_names("text")
