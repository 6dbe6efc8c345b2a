"""Options shared by every command that runs the model, defined once."""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

from ..errors import (
    BackendError,
    BlipcapError,
    ExportError,
    ModelLoadError,
    ModelNotFoundError,
    OutOfMemoryError,
)

if TYPE_CHECKING:
    from ..options import CaptionOptions

DEFAULT_MODEL = "Salesforce/blip-image-captioning-large"

# The exit status of every command.
EXIT_OK = 0  # everything done (with --check: nothing to fix)
EXIT_ITEMS_FAILED = 1  # some items failed, a check found problems, golden captions drifted
EXIT_USAGE = 2  # usage or configuration error: options, files, a missing extra or program
EXIT_MODEL = 3  # the model could not be found, loaded, run or exported

_MODEL_ERRORS = (ModelNotFoundError, ModelLoadError, BackendError, OutOfMemoryError, ExportError)


def apply(f: Callable, decorators: list[Callable]) -> Callable:
    """Apply click decorators in the order they are listed (the first is the first in --help)."""
    for decorator in reversed(decorators):
        f = decorator(f)
    return f


def choice_option(name: str, choices: list[str], help: str) -> Callable:
    """One of ``choices``, "auto" by default (shown in --help)."""
    return click.option(
        name, type=click.Choice(choices), default="auto", show_default=True, help=help
    )


DTYPES = ("auto", "float32", "float16", "bfloat16")
MODEL_HELP = "Hub id, local Hugging Face directory, or exported ONNX directory"


def model_option(what: str = MODEL_HELP) -> Callable:
    """--model/-m (env BLIPCAP_MODEL): ``what`` it accepts, then the env and the default."""
    return click.option(
        "--model",
        "-m",
        envvar="BLIPCAP_MODEL",
        default=None,
        metavar="M",
        help=f"{what} [env BLIPCAP_MODEL; default {DEFAULT_MODEL}].",
    )


def model_options(f: Callable) -> Callable:
    """--model, --backend, --device, --dtype (every command that runs the model takes these)."""
    return apply(
        f,
        [
            model_option(),
            choice_option(
                "--backend",
                ["auto", "torch", "onnx"],
                "Inference backend; auto picks onnx for an exported directory, else torch.",
            ),
            choice_option(
                "--device", ["auto", "cpu", "cuda"], "Where to run; auto uses CUDA when available."
            ),
            choice_option(
                "--dtype",
                list(DTYPES),
                "Weights and activations; auto is float32 on CPU, bfloat16/float16 on CUDA.",
            ),
        ],
    )


def decoding_options(f: Callable) -> Callable:
    """Decoding flags mapping 1:1 onto CaptionOptions fields (None = keep the preset's value)."""
    return apply(
        f,
        [
            click.option(
                "--preset",
                type=click.Choice(["default", "coco"]),
                default=None,
                help="default: greedy, 30 new tokens, artifacts cleaned. "
                "coco: the paper's protocol (beam 3, length 5..20 with the prompt 'a picture of ').",
            ),
            click.option(
                "--beams", "num_beams", type=click.IntRange(min=1), default=None, help="Beam width."
            ),
            click.option("--max-new-tokens", type=click.IntRange(min=1), default=None),
            click.option("--min-new-tokens", type=click.IntRange(min=0), default=None),
            click.option(
                "--prompt", default=None, help="Conditional captioning: continue this text."
            ),
            click.option(
                "--sample", "do_sample", is_flag=True, default=None, help="Nucleus sampling."
            ),
            click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=None),
            click.option("--temperature", type=click.FloatRange(0, min_open=True), default=None),
            click.option(
                "--num-captions",
                type=click.IntRange(min=1),
                default=None,
                help="Captions per image (K).",
            ),
            click.option(
                "--repetition-penalty", type=click.FloatRange(0, min_open=True), default=None
            ),
            click.option("--seed", type=int, default=None, help="Seed for --sample."),
        ],
    )


def progress_option(f: Callable) -> Callable:
    """--progress/--no-progress; None (neither given) means: when stderr is a terminal."""
    return click.option(
        "--progress/--no-progress",
        default=None,
        help="Progress bar on stderr [default: when stderr is a terminal].",
    )(f)


def file_option(*decls: str, help: str, **kwargs: Any) -> Callable:
    """An option that names a file (not a directory), passed on as a Path."""
    return click.option(
        *decls, type=click.Path(dir_okay=False, path_type=Path), help=help, **kwargs
    )


def number_option(name: str, type: click.ParamType, default: float, help: str) -> Callable:
    """A number in a range, with its default shown in --help."""
    return click.option(name, type=type, default=default, show_default=True, help=help)


def json_option(help: str) -> Callable:
    """--json (the ``as_json`` parameter): machine-readable output, described by ``help``."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def _batch_size(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if value != "auto" and not (str(value).isdigit() and int(value) > 0):
        raise click.BadParameter("use 'auto' or a positive integer")
    return value


def batch_size_option(f: Callable) -> Callable:
    """--batch-size auto|N, checked here: "auto" or a positive integer, passed on as given."""
    return click.option(
        "--batch-size",
        default="auto",
        show_default=True,
        metavar="auto|N",
        callback=_batch_size,
        help="Images per model batch; auto sizes batches to the available memory.",
    )(f)


DECODING_FLAG_NAMES = (
    "num_beams",
    "max_new_tokens",
    "min_new_tokens",
    "prompt",
    "do_sample",
    "top_p",
    "temperature",
    "num_captions",
    "repetition_penalty",
    "seed",
)


def pop_decoding_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Remove the decoding flags from a command's kwargs and return them as CaptionOptions overrides."""
    overrides = {name: kwargs.pop(name, None) for name in DECODING_FLAG_NAMES}
    overrides["preset"] = kwargs.pop("preset", None)
    return overrides


def pop_caption_options(kwargs: dict[str, Any]) -> CaptionOptions:
    """The decoding flags given on the command line (preset included), removed from ``kwargs``,
    as the :class:`~blipcap.options.CaptionOptions` they stand for."""
    from ..options import resolve_options

    given = {k: v for k, v in pop_decoding_options(kwargs).items() if v is not None}
    return resolve_options(None, given.pop("preset", None), **given)


def open_captioner(
    model: str | None, backend: str, device: str, dtype: str, *, meaningless: str = ""
):
    """The process-wide Captioner for these settings, with a clean CLI error on failure.

    Given ``meaningless`` (what the command makes from captions, e.g. "its captions"),
    a model with random weights (a test checkpoint) gets a warning that those are meaningless.
    """
    from ..captioner import get_captioner

    try:
        cap = get_captioner(model=model, backend=backend, device=device, dtype=dtype)
    except BlipcapError as exc:
        raise CommandError.from_error(exc) from exc
    if meaningless and cap.random_weights:
        warn(f"this model has RANDOM weights (a test checkpoint): {meaningless} are meaningless")
    return cap


@contextmanager
def open_output(path: Path | None) -> Iterator[IO[str]]:
    """stdout, or a temporary file next to ``path`` renamed into place once complete.

    The file gets the permissions of any file the user creates (0666 less the
    umask), not the private 0600 of a temporary file.
    """
    if path is None:
        if hasattr(sys.stdout, "reconfigure"):  # an ASCII terminal must not lose a whole run
            sys.stdout.reconfigure(errors="backslashreplace")
        yield sys.stdout
        return
    directory = path.resolve().parent
    if not directory.is_dir():
        raise BlipcapError(f"cannot write {path}: folder {directory} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=directory)
    try:
        with open(fd, "w", encoding="utf-8", newline="") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_utf8(out: IO[str]) -> bool:
    """Whether ``out`` encodes UTF-8 (else JSON is written ASCII-only, with \\u escapes)."""
    encoding = (getattr(out, "encoding", None) or "utf-8").lower().replace("-", "")
    return encoding in ("utf8", "utf8sig")


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def warn(message: str) -> None:
    click.echo(f"blipcap: {message}", err=True)


def show_progress(given: bool | None = None) -> bool:
    """Progress bars go to stderr: as ``--progress/--no-progress`` says when ``given``, else
    only when stderr is a terminal (or forced by BLIPCAP_PROGRESS=1)."""
    if given is not None:
        return given
    forced = os.environ.get("BLIPCAP_PROGRESS")
    if forced is not None:
        return forced not in ("", "0")
    return sys.stderr.isatty()


class CommandError(click.ClickException):
    """A message on stderr (no traceback) and the exit status that says what kind of failure."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    @classmethod
    def from_error(cls, exc: BlipcapError) -> CommandError:
        return cls(str(exc), exit_status(exc))


def exit_status(exc: BlipcapError) -> int:
    """3 when the model is what failed, else 2 (options, files, a missing extra or program)."""
    return EXIT_MODEL if isinstance(exc, _MODEL_ERRORS) else EXIT_USAGE


def cli_errors(f: Callable) -> Callable:
    """Turn BlipcapError into a clean message and its exit status instead of a traceback."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except BlipcapError as exc:
            raise CommandError.from_error(exc) from exc

    return wrapper
