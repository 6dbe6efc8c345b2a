"""Load a Hugging Face BLIP checkpoint into the lean PyTorch model by key name."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from ..errors import BlipcapError, ModelLoadError
from .config import BlipConfig
from .text import TextDecoder
from .tf_weights import TF_WEIGHTS
from .vision import VisionModel

# Keys of the published checkpoints that captioning does not use (ITM/ITC heads,
# buffers written by older transformers releases).
_IGNORED_PREFIXES = ("text_encoder.", "vision_proj.", "text_proj.", "itm_head.", "logit_scale")
_IGNORED_SUFFIXES = ("position_ids",)
_TIED = {
    # tie_word_embeddings: the LM head shares the input embeddings
    "text_decoder.cls.predictions.decoder.weight": "text_decoder.bert.embeddings.word_embeddings.weight",
    "text_decoder.cls.predictions.decoder.bias": "text_decoder.cls.predictions.bias",
}


class BlipCaptioningModel(nn.Module):
    """The two halves of BlipForConditionalGeneration that captioning needs."""

    def __init__(self, config: BlipConfig):
        super().__init__()
        self.config = config
        self.vision_model = VisionModel(config.vision)
        self.text_decoder = TextDecoder(config.text)

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, T, vocab) for ``input_ids`` (starting with [DEC]).

        The same numbers as transformers' ``BlipForConditionalGeneration(pixel_values,
        input_ids).logits``; used for training, not for decoding (which caches).
        """
        return self.text_decoder.forward_full(input_ids, self.vision_model(pixel_values))


def weight_files(directory: Path) -> list[Path]:
    """The checkpoint's weight files: safetensors (single or sharded) first, else
    pytorch_model.bin, else TensorFlow's tf_model.h5."""
    single = directory / "model.safetensors"
    if single.exists():
        return [single]
    index = directory / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [directory / s for s in shards]
    pickle = directory / "pytorch_model.bin"
    if pickle.exists():
        return [pickle]
    tf = directory / TF_WEIGHTS
    if tf.exists():
        return [tf]
    raise ModelLoadError(
        f"no weights in {directory}: expected model.safetensors (or a sharded "
        "model.safetensors.index.json, pytorch_model.bin or tf_model.h5)"
    )


def read_state_dict(files: Iterable[Path]) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            if f.suffix == ".safetensors":
                from safetensors.torch import load_file

                state.update(load_file(str(f)))
            elif f.suffix == ".h5":
                from .tf_weights import read_tf_h5

                state.update({k: torch.from_numpy(v) for k, v in read_tf_h5(f).items()})
            else:
                # weights_only: a checkpoint must never be able to run code on load.
                state.update(torch.load(f, map_location="cpu", weights_only=True))
        except BlipcapError:  # a missing h5py, or a file read_tf_h5 already explained
            raise
        except Exception as exc:  # noqa: BLE001 - any failure here means a bad file
            raise ModelLoadError(
                f"could not read weights from {f}: {exc}. The file may be truncated or corrupt; "
                "delete it and download the model again"
            ) from exc
    return state


# The torch.nn.init functions that layers call when they are built (Linear, Embedding,
# LayerNorm, Conv2d).
_INIT_FUNCTIONS = ("normal_", "uniform_", "kaiming_uniform_", "zeros_", "ones_", "constant_")


def check_against_config(
    state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], directory: object
) -> None:
    """No weight beyond those ``expected`` (the model built from config.json), each of its shape."""
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise ModelLoadError(
            f"the checkpoint in {directory} has {len(unexpected)} unexpected weight(s), e.g. "
            f"{unexpected[:3]}; it does not match its config.json"
        )
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise ModelLoadError(
                f"weight {key} has shape {tuple(state[key].shape)} in the checkpoint but "
                f"config.json implies {tuple(tensor.shape)}"
            )


@contextmanager
def no_weight_init() -> Iterator[None]:
    """Build layers without initializing their weights: every weight comes from the checkpoint.

    On the meta device that initialization does nothing useful, and ``normal_`` there
    imports ``torch._dynamo`` (more than a second of start-up on the CPU path).
    """
    saved = {name: getattr(nn.init, name) for name in _INIT_FUNCTIONS}
    for name in _INIT_FUNCTIONS:
        setattr(nn.init, name, _keep)
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(nn.init, name, function)


def _keep(tensor: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
    return tensor


def load_model(
    directory: Path, config: BlipConfig, dtype: torch.dtype, device
) -> BlipCaptioningModel:
    """Build the model and load the checkpoint in ``directory``; strict about missing keys and shapes."""
    with torch.device("meta"), no_weight_init():
        model = BlipCaptioningModel(config)
    expected = model.state_dict()
    state = read_state_dict(weight_files(directory))
    state = {
        k: v
        for k, v in state.items()
        if not k.startswith(_IGNORED_PREFIXES) and not k.endswith(_IGNORED_SUFFIXES)
    }
    for key, source in _TIED.items():
        if key not in state and source in state:
            state[key] = state[source]
    state.pop("text_decoder.cls.predictions.bias", None)  # an alias of decoder.bias
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ModelLoadError(
            f"the checkpoint in {directory} lacks {len(missing)} weight(s) the captioning model "
            f"needs, e.g. {missing[:3]}. Is it a BLIP *captioning* checkpoint "
            "(BlipForConditionalGeneration)?"
        )
    check_against_config(state, expected, directory)
    converted: dict[int, torch.Tensor] = {}  # tied weights stay one tensor after conversion
    state = {
        k: converted.setdefault(id(v), v.to(device=device, dtype=dtype)) for k, v in state.items()
    }
    model.load_state_dict(state, assign=True, strict=True)
    return model.eval().requires_grad_(False)


def tie_weights(model: BlipCaptioningModel) -> BlipCaptioningModel:
    """Share the LM head's weight with the word embeddings (BLIP's tie_word_embeddings)."""
    text = model.text_decoder
    text.cls.predictions.decoder.weight = text.bert.embeddings.word_embeddings.weight
    return model


def hf_state_dict(model: BlipCaptioningModel) -> dict[str, torch.Tensor]:
    """The model's weights under the key names ``save_pretrained`` writes (inverse of loading).

    The LM head's weight is tied to the word embeddings, so it is left out, and its
    bias is stored under its canonical name ``text_decoder.cls.predictions.bias``.
    """
    head = model.text_decoder.cls.predictions.decoder.weight
    words = model.text_decoder.bert.embeddings.word_embeddings.weight
    if head.data_ptr() != words.data_ptr() and not torch.equal(head, words):
        raise ValueError(
            "the LM head is not tied to the word embeddings, which the BLIP checkpoint layout "
            "requires; call tie_weights(model) before training"
        )
    state = {k: v.detach() for k, v in model.state_dict().items()}
    state.pop("text_decoder.cls.predictions.decoder.weight")
    state["text_decoder.cls.predictions.bias"] = state.pop(
        "text_decoder.cls.predictions.decoder.bias"
    )
    return state


def save_weights(model: BlipCaptioningModel, path: Path) -> None:
    """Write ``model.safetensors`` (fp32, contiguous, HF key names) that ``load_model`` reads back."""
    from safetensors.torch import save_file

    state = {
        k: v.to(device="cpu", dtype=torch.float32).contiguous().clone()
        for k, v in hf_state_dict(model).items()
    }
    save_file(state, str(path), metadata={"format": "pt"})
