"""The student's shape, its config.json, and its initialization from the teacher's weights.

Design (documented in docs/distill.md):

* **Depth**: the student keeps ``k`` of the teacher's ``n`` layers, evenly spaced
  and always including the first and the last (``n=12, k=6`` -> 0, 2, 4, 7, 9, 11),
  as DistilBERT keeps every other layer. Embeddings, the final layer norm and the
  LM head are copied as they are.
* **Width** (optional, vision only): a narrower vision encoder keeps the teacher's
  head size and drops whole heads; every weight is *truncated* to the student's
  shape (the first ``d'`` channels, the first ``h'`` heads of q, k and v, the first
  ``d' * mlp / d`` MLP units). The text decoder's cross-attention key/value
  projections keep their first ``d'`` input columns to match.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import OptionsError
from ..model.config import BlipConfig
from ..model.weights import BlipCaptioningModel, tie_weights


@dataclass(frozen=True)
class StudentShape:
    vision_layers: int
    text_layers: int
    vision_width: int | None = None
    """Hidden size of the student's vision encoder; None keeps the teacher's."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "vision_layers": self.vision_layers,
            "text_layers": self.text_layers,
            "vision_width": self.vision_width,
        }


def pick_layers(teacher: int, student: int) -> list[int]:
    """``student`` evenly spaced layer indices out of ``teacher``, first and last included."""
    if not 1 <= student <= teacher:
        raise OptionsError(f"a student needs between 1 and {teacher} layers here, got {student}")
    if student == 1:
        return [teacher - 1]
    return [round(i * (teacher - 1) / (student - 1)) for i in range(student)]


def student_config(teacher_raw: dict[str, Any], teacher: BlipConfig, shape: StudentShape) -> dict:
    """The student's ``config.json``: the teacher's, with fewer layers (and a narrower vision width)."""
    v, t = teacher.vision, teacher.text
    pick_layers(v.num_hidden_layers, shape.vision_layers)  # range checks
    pick_layers(t.num_hidden_layers, shape.text_layers)
    raw = copy.deepcopy(teacher_raw)
    vision = raw.setdefault("vision_config", {})
    text = raw.setdefault("text_config", {})
    vision["num_hidden_layers"] = shape.vision_layers
    text["num_hidden_layers"] = shape.text_layers
    width = shape.vision_width or v.hidden_size
    if width != v.hidden_size:
        head = v.hidden_size // v.num_attention_heads
        if not head <= width <= v.hidden_size or width % head:
            raise OptionsError(
                f"--vision-width {width}: it must be a multiple of the teacher's vision head "
                f"size {head} and at most its width {v.hidden_size}"
            )
        vision["hidden_size"] = width
        vision["num_attention_heads"] = width // head
        vision["intermediate_size"] = v.intermediate_size * width // v.hidden_size
    text["encoder_hidden_size"] = width
    return raw


_LAYER = re.compile(r"^(vision_model\.encoder\.layers|text_decoder\.bert\.encoder\.layer)\.(\d+)\.")


def init_student(
    teacher: BlipCaptioningModel, config: BlipConfig, shape: StudentShape
) -> BlipCaptioningModel:
    """A trainable student (fp32, CPU) whose every weight comes from the teacher (see module doc)."""
    student = BlipCaptioningModel(config)
    tie_weights(student)
    layers = {
        "vision_model.encoder.layers": pick_layers(
            teacher.config.vision.num_hidden_layers, shape.vision_layers
        ),
        "text_decoder.bert.encoder.layer": pick_layers(
            teacher.config.text.num_hidden_layers, shape.text_layers
        ),
    }
    source = teacher.state_dict()
    state = {}
    for key, target in student.state_dict().items():
        m = _LAYER.match(key)
        name = key
        if m:
            name = f"{m[1]}.{layers[m[1]][int(m[2])]}.{key[m.end() :]}"
        state[key] = _truncate(key, source[name].detach().float().cpu(), tuple(target.shape))
    student.load_state_dict(state, strict=True)
    return tie_weights(student).train()


def _truncate(key: str, w: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    if tuple(w.shape) == shape:
        return w.clone()
    if key.endswith("self_attn.qkv.weight") or key.endswith("self_attn.qkv.bias"):
        # q, k and v are stacked: keep the first heads of each.
        d = w.shape[0] // 3
        blocks = w.reshape(3, d, *w.shape[1:])
        cut = blocks[(slice(None), slice(0, shape[0] // 3), *(slice(0, s) for s in shape[1:]))]
        return cut.reshape(shape).clone()
    return w[tuple(slice(0, s) for s in shape)].clone()
