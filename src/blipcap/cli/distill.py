"""``blipcap distill``: train a smaller student captioner on a folder of unlabeled images."""

from __future__ import annotations

import json

import click

from .common import (
    DTYPES,
    choice_option,
    cli_errors,
    json_option,
    model_option,
    number_option,
    show_progress,
    warn,
)

_COUNT = click.IntRange(min=1)
_POSITIVE = click.FloatRange(min=0, min_open=True)


def layers_option(name: str, help: str):
    """A required number of layers of the student."""
    return click.option(name, type=_COUNT, required=True, help=help)


@click.command(
    "distill",
    epilog="""\b
Examples:
  blipcap distill photos/ --out blip-student --vision-layers 12 --text-layers 6
  blipcap distill photos/ --out blip-student-s --vision-layers 6 --text-layers 4 --epochs 5
  blipcap distill photos/ --out blip-student          # run again: continues where it stopped
  blipcap export onnx --model blip-student --out blip-student-int8 --quantize int8
  blipcap caption shots/ --model blip-student-int8

The teacher (--model, any BLIP captioning checkpoint) captions every image
once (kept in OUT/distill-state/teacher.jsonl). The student keeps evenly spaced
layers of the teacher (first and last included), optionally a narrower vision
encoder (--vision-width: whole heads dropped, weights truncated), and learns
the teacher's captions (cross-entropy) and its token distributions (KL at
--temperature, weighted by --kl-weight). Before training and after each epoch
it is compared with the teacher on held-back images: exact caption match and
token agreement (teacher forcing: the student's next token is the teacher's).
With --augment mixup (the default) each training step shows teacher and student
the same random view of each image (flipped, mixed with another image) and
matches the teacher's answer on that view: the student learns the teacher's
function rather than its answers on a few images.

OUT/distill-state/state.pt holds the student, the optimizer and the step, so
running the same command again resumes (or, when done, just rewrites OUT).
The result in OUT is a Hugging Face layout checkpoint (config.json,
model.safetensors, tokenizer and preprocessor files) that every blipcap command
and transformers' BlipForConditionalGeneration load; OUT/distill.json holds the
validation history. A GPU is used when there is one; the CPU suits small shapes.

\b
Exit status: 0 done, 2 on usage or configuration errors, 3 when the teacher
could not be found or loaded.
""",
)
@click.argument("images", type=click.Path(exists=True, file_okay=False))
@model_option("The teacher: hub id or local Hugging Face directory")
@click.option(
    "--out",
    "-o",
    required=True,
    type=click.Path(file_okay=False),
    help="Student directory (created; resumed when it holds a run).",
)
@layers_option("--vision-layers", "Vision encoder layers of the student.")
@layers_option("--text-layers", "Text decoder layers of the student.")
@number_option(
    "--vision-width",
    _COUNT,
    None,
    "Narrower vision encoder (a multiple of the teacher's head size); default: the teacher's.",
)
@number_option("--epochs", _COUNT, 3, "Passes over the training images.")
@number_option("--batch-size", _COUNT, 16, "Images per training step.")
@number_option(
    "--lr", _POSITIVE, 1e-4, "Peak learning rate (AdamW; warm-up, then cosine decay to 10%)."
)
@number_option("--temperature", _POSITIVE, 2.0, "Softmax temperature of the token-level KL term.")
@number_option(
    "--kl-weight",
    click.FloatRange(0, 1),
    0.95,
    "Weight of the KL term; the caption cross-entropy gets 1 - this.",
)
@number_option(
    "--val-images", _COUNT, None, "Held-back images for validation [default: 5%, 1 to 1000]."
)
@number_option(
    "--max-new-tokens", _COUNT, 30, "Length limit of the teacher's (and student's) captions."
)
@number_option(
    "--beams", _COUNT, 1, "The teacher captions with beam search of this width (1: greedy)."
)
@click.option(
    "--augment",
    type=click.Choice(["mixup", "none"]),
    default="mixup",
    show_default=True,
    help="mixup: teacher and student see the same random view of each image (flipped, mixed "
    "with another) - the teacher's function is learnt, not its answers on these images; "
    "none: the images as they are.",
)
@number_option(
    "--save-every",
    click.IntRange(min=0),
    0,
    "Also save the state every N steps (0: after each epoch).",
)
@number_option("--seed", click.INT, 0, "Shuffling seed.")
@choice_option(
    "--device", ["auto", "cpu", "cuda"], "Where to train; auto uses CUDA when available."
)
@choice_option(
    "--dtype",
    list(DTYPES),
    "The teacher's dtype (auto: float32 on CPU, bfloat16/float16 on CUDA); the student trains in float32.",
)
@json_option("Print the report (validation history) as JSON on stdout.")
@cli_errors
def distill(images, model, out, vision_layers, text_layers, vision_width, epochs, batch_size, lr,
            temperature, kl_weight, val_images, max_new_tokens, beams, augment, save_every, seed,
            device, dtype, as_json) -> None:  # fmt: skip
    """Distill the model into a smaller, faster student using a folder of unlabeled images."""
    from ..distill import DistillOptions, StudentShape
    from ..distill import distill as run

    options = DistillOptions(
        student=StudentShape(vision_layers, text_layers, vision_width), epochs=epochs,
        batch_size=batch_size, lr=lr, temperature=temperature, kl_weight=kl_weight,
        val_images=val_images, max_new_tokens=max_new_tokens, num_beams=beams,
        augment=augment, save_every=save_every, seed=seed, device=device, dtype=dtype,
    )  # fmt: skip
    report = run(model, images, out, options, progress=show_progress(), log=warn)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        first, last = report.history[0], report.history[-1]
        click.echo(
            f"student written to {out} ({report.student_parameters / 1e6:.1f}M parameters, "
            f"teacher {report.teacher_parameters / 1e6:.1f}M); on {report.val_images} held-back "
            f"images: exact caption match {first['exact_match']:.1%} -> {last['exact_match']:.1%}, "
            f"token agreement {first['token_agreement']:.1%} -> {last['token_agreement']:.1%}"
        )
