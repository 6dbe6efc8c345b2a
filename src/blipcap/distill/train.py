"""The distillation loop: teacher captions -> student trained on captions and logits.

Loss per batch, on the teacher's caption ([DEC] + tokens + [SEP]) under teacher
forcing, averaged over caption positions:

    (1 - kl_weight) * cross-entropy(student, teacher's tokens)
        + kl_weight * T^2 * KL(teacher_T || student_T)

where ``_T`` is softmax at temperature T. With ``augment="mixup"`` (the
default) teacher and student see the same random view of each image - flipped
or not, mixed with another image of the batch - and the cross-entropy target is
the teacher's own next token on that view: "consistent teaching" (Beyer et al.,
"Knowledge distillation: A good teacher is patient and consistent", CVPR 2022),
which lets a few thousand images teach the teacher's function instead of its
answers on those images only. The run keeps its state in
``<out>/distill-state/`` (student, optimizer, step, validation history); running
the same command again continues where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..decoding import SpecialTokens
from ..errors import OptionsError
from ..model.config import BlipConfig
from ..model.weights import BlipCaptioningModel, save_weights, tie_weights
from .data import (
    Example,
    TeacherLabels,
    batches,
    default_val_images,
    list_images,
    load_pixels,
    sequences,
    split,
)
from .student import StudentShape, init_student, student_config
from .validate import agreement

STATE_DIR = "distill-state"
AUGMENTATIONS = ("mixup", "none")
# Files of a Hugging Face BLIP directory that the student shares with its teacher.
_SHARED_FILES = (
    "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
    "added_tokens.json", "preprocessor_config.json", "processor_config.json",
    "generation_config.json",
)  # fmt: skip


@dataclass(frozen=True)
class DistillOptions:
    student: StudentShape
    epochs: int = 3
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup: float = 0.05
    """Share of the steps with a linearly rising learning rate (then cosine decay to 10%)."""
    temperature: float = 2.0
    kl_weight: float = 0.95
    """Weight of the token-level KL term; 1 - kl_weight goes to the caption cross-entropy.

    Mostly KL, as in function matching: the teacher's whole distribution is the
    signal; its argmax alone (the cross-entropy's target) is brittle where the
    teacher is unsure (docs/distill.md: 0.5 did not generalize, 0.95 did)."""
    val_images: int | None = None
    """Held-back images for validation; None: 5% (1 to 1000)."""
    max_new_tokens: int = 30
    num_beams: int = 1
    """How the teacher captions the images: 1 = greedy, more = beam search."""
    freeze_vocabulary: bool = True
    """Keep the teacher's word embeddings and output layer (tied, the vocabulary's share
    of the parameters) as they are: the student then has to reproduce the teacher's
    hidden states, which carries over to other images, instead of re-weighting the
    tokens of the captions it is shown."""
    augment: str = "mixup"
    """``mixup``: teacher and student see the same random view (flip, mix with another
    image); ``none``: the images as they are."""
    save_every: int = 0
    """Also save the state every this many steps (0: after each epoch only)."""
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    """The teacher's dtype; the student trains in float32 (bfloat16 autocast on CUDA)."""

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1, "batch_size": self.batch_size >= 1, "lr": self.lr > 0,
            "temperature": self.temperature > 0, "kl_weight": 0 <= self.kl_weight <= 1,
            "max_new_tokens": self.max_new_tokens >= 1, "num_beams": self.num_beams >= 1,
            "warmup": 0 <= self.warmup < 1, "save_every": self.save_every >= 0,
            "augment": self.augment in AUGMENTATIONS,
        }  # fmt: skip
        for name, ok in checks.items():
            if not ok:
                raise OptionsError(f"distill option {name}={getattr(self, name)!r} is out of range")


@dataclass
class DistillReport:
    out_dir: str
    teacher: str
    student: dict[str, Any]
    train_images: int
    val_images: int
    skipped_images: dict[str, str]
    steps: int
    teacher_parameters: int
    student_parameters: int
    history: list[dict[str, Any]] = field(default_factory=list)
    """Validation after each epoch (epoch 0: the initialized student, before training)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Run:
    """What every stage of one distillation run shares."""

    cap: Any  # the teacher's Captioner
    options: DistillOptions
    folder: Path
    state_dir: Path
    caption_options: Any
    say: Any
    progress: bool
    identity: dict[str, Any] = field(default_factory=dict)
    """The settings a saved state must match to be resumed."""

    @property
    def teacher(self) -> BlipCaptioningModel:
        return self.cap.backend.model

    @property
    def device(self) -> str:
        return self.cap.backend.device


@dataclass
class _Training:
    """The student being trained, its optimizer and how far it got."""

    student: BlipCaptioningModel
    raw_config: dict
    optimizer: torch.optim.Optimizer
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def distill(
    teacher: str,
    images: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    options: DistillOptions,
    progress: bool = False,
    log=None,
) -> DistillReport:
    """Distill ``teacher`` (hub id or HF directory) into a smaller student written to ``out_dir``."""
    from ..captioner import Captioner
    from ..options import CaptionOptions

    folder, out = Path(images), Path(out_dir)
    cap = Captioner(teacher, backend="torch", device=options.device, dtype=options.dtype)
    r = _Run(
        cap=cap, options=options, folder=folder, state_dir=out / STATE_DIR,
        caption_options=CaptionOptions(
            num_beams=options.num_beams, max_new_tokens=options.max_new_tokens,
            clean_artifacts=False,
        ),
        say=log or (lambda msg: print(msg, file=sys.stderr, flush=True)), progress=progress,
    )  # fmt: skip
    paths = list_images(folder)
    train, held = split(paths, options.val_images or default_val_images(len(paths)))
    r.identity = {
        "teacher": cap.model_id, "revision": cap.files.revision, "images": str(folder.resolve()),
        "student": options.student.to_dict(), "val": held,
        "freeze_vocabulary": options.freeze_vocabulary,
    }  # fmt: skip
    # 1. The teacher's captions.
    labels = _teacher_labels(r, paths)
    train_ex = [labels.examples[p] for p in train if p in labels.examples]
    val_ex = [labels.examples[p] for p in held if p in labels.examples]
    if not train_ex or not val_ex:
        raise OptionsError(
            f"no usable images left to train on or to validate with in {folder} "
            f"({len(labels.failed)} could not be read)"
        )
    # 2. The student: resumed, or initialized from the teacher, then trained.
    t = _start_student(r)
    _train(r, t, train_ex, val_ex)
    # 3. The student as a normal Hugging Face checkpoint.
    write_checkpoint(t.student, t.raw_config, cap.files.path, out)
    report = DistillReport(
        out_dir=str(out), teacher=cap.model_id, student=options.student.to_dict(),
        train_images=len(train_ex), val_images=len(val_ex), skipped_images=dict(labels.failed),
        steps=t.step, teacher_parameters=_count(r.teacher),
        student_parameters=_count(t.student), history=t.history,
    )  # fmt: skip
    (out / "distill.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def _teacher_labels(r: _Run, paths: list[str]) -> TeacherLabels:
    """The teacher's caption of every image, computed for those not captioned yet."""
    cap, options = r.cap, r.options
    labels = TeacherLabels(
        r.state_dir / "teacher.jsonl",
        {"teacher": cap.model_id, "revision": cap.files.revision, **r.caption_options.to_dict()},
    )
    todo = labels.missing(paths)
    if not todo:
        return labels
    r.say(f"captioning {len(todo)} image(s) with the teacher ...")
    bar = _bar(r.progress, len(todo), "teacher captions", "img")

    def caption_batch(chunk: list[str]):
        pixels = load_pixels(r.folder, chunk, cap.load)
        good = [p for p in pixels if not isinstance(p, str)]
        tokens = iter(cap.generate_tokens(np.stack(good), r.caption_options) if good else [])
        out_ = []
        for p in pixels:
            if isinstance(p, str):
                out_.append(p)
            else:
                t = next(tokens)[0]
                out_.append((t, len(t) < options.max_new_tokens))
        return out_

    labels.compute(paths, caption_batch, options.batch_size, bar.update if bar else None)
    if bar:
        bar.close()
    return labels


def _start_student(r: _Run) -> _Training:
    """The student and its optimizer: resumed from the saved state, or initialized from the teacher."""
    cap, options = r.cap, r.options
    teacher_raw = json.loads((cap.files.path / "config.json").read_text())
    raw = student_config(teacher_raw, cap.config, options.student)
    raw["blipcap_distilled_from"] = {"model": cap.model_id, "revision": cap.files.revision}
    config = BlipConfig.from_dict(raw, "student config")
    saved = _load_state(r.state_dir / "state.pt", r.identity)
    if saved is None:
        student = init_student(r.teacher, config, options.student)
    else:
        student = tie_weights(BlipCaptioningModel(config))
        student.load_state_dict(saved["student"], strict=True)
        tie_weights(student)
    student = student.to(r.device).train()
    if options.freeze_vocabulary:
        text = student.text_decoder
        for p in (*text.bert.embeddings.word_embeddings.parameters(),
                  *text.cls.predictions.decoder.parameters()):  # fmt: skip
            p.requires_grad_(False)
    trained = [p for p in student.parameters() if p.requires_grad]
    decay = [p for p in trained if p.ndim >= 2]
    rest = [p for p in trained if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": options.weight_decay},
            {"params": rest, "weight_decay": 0.0},
        ],
        lr=options.lr,
    )
    t = _Training(student, raw, optimizer)
    if saved is not None:
        optimizer.load_state_dict(saved["optimizer"])
        t.step, t.history = saved["step"], saved["history"]
        r.say(f"resuming from step {t.step} ({r.state_dir / 'state.pt'})")
    return t


def _validate(r: _Run, t: _Training, val_ex: list[Example], epoch: int) -> None:
    """Compare the student with the teacher on the held-back images; log and keep the result."""
    text = r.cap.config.text
    special = SpecialTokens(eos=text.sep_token_id, pad=text.pad_token_id)
    t.student.eval()
    metrics = agreement(
        t.student, r.teacher, val_ex, r.folder, r.cap.load, r.caption_options, special,
        text.bos_token_id, r.options.batch_size, r.device,
    )  # fmt: skip
    t.student.train()
    t.history.append({"epoch": epoch, "step": t.step, **metrics})
    r.say(
        f"epoch {epoch}: exact caption match {metrics['exact_match']:.1%}, token agreement "
        f"{metrics['token_agreement']:.1%} on {metrics['images']} held-back images"
    )


def _save(r: _Run, t: _Training) -> None:
    _save_state(r.state_dir / "state.pt", t.student, t.optimizer, t.step, t.history, r.identity)


def _train(r: _Run, t: _Training, train_ex: list[Example], val_ex: list[Example]) -> None:
    """Train up to the last step (validated before the first step and after each epoch)."""
    options = r.options
    steps_per_epoch = math.ceil(len(train_ex) / options.batch_size)
    total = steps_per_epoch * options.epochs
    if not t.history:
        _validate(r, t, val_ex, 0)
        _save(r, t)
    bar = _bar(r.progress, total, "distilling", "step", initial=min(t.step, total))
    text = r.cap.config.text
    ids = (text.bos_token_id, text.sep_token_id, text.pad_token_id)
    autocast = r.device.startswith("cuda")
    try:
        while t.step < total:
            epoch, offset = divmod(t.step, steps_per_epoch)
            order = torch.randperm(
                len(train_ex), generator=torch.Generator().manual_seed(options.seed + epoch)
            )
            chunks = list(batches([train_ex[i] for i in order.tolist()], options.batch_size))
            for chunk in chunks[offset:]:
                loss = _train_step(
                    t.student, r.teacher, t.optimizer, chunk, r.folder, r.cap.load, options,
                    ids, r.device, autocast, _lr(t.step, total, options),
                    torch.Generator().manual_seed(options.seed * 1_000_003 + t.step),
                )  # fmt: skip
                t.step += 1
                if bar:
                    bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
                    bar.update(1)
                if options.save_every and t.step % options.save_every == 0:
                    _save(r, t)
            _validate(r, t, val_ex, epoch + 1)
            _save(r, t)
    finally:
        if bar:
            bar.close()


def _train_step(
    student, teacher, optimizer, chunk, folder, load, options, ids, device, autocast, lr, rng
):
    bos, sep, pad = ids
    pixels = load_pixels(folder, [e.path for e in chunk], load)
    keep = [i for i, p in enumerate(pixels) if not isinstance(p, str)]
    pixel_values = torch.from_numpy(np.stack([pixels[i] for i in keep]))
    if options.augment == "mixup":
        pixel_values = consistent_view(pixel_values, rng)
    pixel_values = pixel_values.to(device)
    inputs, targets, mask = sequences([chunk[i] for i in keep], bos, sep, pad, device)
    for group in optimizer.param_groups:
        group["lr"] = lr
    with torch.no_grad():
        t_logits = teacher(pixel_values.to(next(teacher.parameters()).dtype), inputs).float()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        s_logits = student(pixel_values, inputs)
    s_logits = s_logits.float()[mask]
    t_logits = t_logits[mask]
    # On a view the teacher did not caption, its own choice is the target.
    target = targets[mask] if options.augment == "none" else t_logits.argmax(-1)
    ce = F.cross_entropy(s_logits, target)
    temp = options.temperature
    kl = F.kl_div(
        F.log_softmax(s_logits / temp, -1), F.log_softmax(t_logits / temp, -1),
        log_target=True, reduction="batchmean",
    ) * temp**2  # fmt: skip
    loss = (1 - options.kl_weight) * ce + options.kl_weight * kl
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
    optimizer.step()
    return loss.detach().item()


def consistent_view(pixels: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """One random view per image, the same for teacher and student: flipped half the time,
    then mixed with another image of the batch (weight uniform in [0, 1]).

    The pixels are normalized; normalization is affine per channel, so mixing them
    is mixing the images.
    """
    n = pixels.shape[0]
    flip = (torch.rand(n, generator=rng) < 0.5).view(n, 1, 1, 1)
    views = torch.where(flip, pixels.flip(-1), pixels)
    if n < 2:
        return views
    partner = views[torch.randperm(n, generator=rng)]
    weight = torch.rand(n, generator=rng).view(n, 1, 1, 1).to(views.dtype)
    return weight * views + (1 - weight) * partner


def _lr(step: int, total: int, o: DistillOptions) -> float:
    warm = max(1, int(o.warmup * total))
    if step < warm:
        return o.lr * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return o.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _load_state(path: Path, run: dict) -> dict | None:
    if not path.exists():
        return None
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved.get("run") != run:
        raise OptionsError(
            f"{path} holds a distillation run with other settings (teacher, images, student "
            f"shape or held-back images); pass another --out, or delete {path.parent} to start over"
        )
    return saved


def _save_state(path: Path, student, optimizer, step: int, history: list, run: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "student": student.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
            "history": history, "run": run, "saved_at": time.time(),
        },
        tmp,
    )  # fmt: skip
    os.replace(tmp, path)  # a crash while saving leaves the previous state intact


def write_checkpoint(
    student: BlipCaptioningModel, raw_config: dict, teacher_dir: Path, out: Path
) -> None:
    """config.json + model.safetensors (HF key names) + the teacher's tokenizer and preprocessor files."""
    out.mkdir(parents=True, exist_ok=True)
    for name in _SHARED_FILES:
        if (teacher_dir / name).exists():
            shutil.copyfile(teacher_dir / name, out / name)
    save_weights(student, out / "model.safetensors.tmp")
    os.replace(out / "model.safetensors.tmp", out / "model.safetensors")
    (out / "config.json").write_text(json.dumps(raw_config, indent=2) + "\n")


def _count(model) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def _bar(enabled: bool, total: int, desc: str, unit: str, initial: int = 0):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)
