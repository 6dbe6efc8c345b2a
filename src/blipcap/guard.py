"""The degeneration guard: find degenerate captions right after decoding and decode them again.

BLIP's best-known failures are decoding loops ("a bald bald bald man", "a hat
on top of a hat on top of a"), the "arafed"/"araffe" artifact and boilerplate
lead-ins ("this image shows ...", "a picture of ...") nobody asked for.
:func:`detect` names them in a caption's text; :func:`guard_batch` re-decodes
only the images with such a caption, trying :func:`fallbacks` in order:

1. the same decoding with no-repeat n-gram blocking of size 2: no two-token
   sequence may occur twice, which breaks loops. (Size 3 would still allow a
   word three times in a row, "bald bald bald", the commonest loop.) A
   stricter size the options already ask for is kept;
2. beam search (3 beams, or more when more captions are asked for), with the
   same blocking: a wider search that also leaves some lead-ins and artifacts
   behind.

The first attempt whose captions are all clean wins. When none is clean, the
attempt with the fewest problems is kept (the original on a tie) and the
report says ``resolved: false``; the ``default`` preset's artifact cleanup
(:func:`blipcap.text.clean_caption`) still applies to its text.

The guard is on in the ``default`` preset and off in ``coco`` (the paper's
protocol) and in a bare :class:`~blipcap.options.CaptionOptions`, whose
output the parity suite pins token for token against transformers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from .options import CaptionOptions
from .results import GuardReport
from .text import ARTIFACT

if TYPE_CHECKING:
    from .decoding import Check, Decoded

REPEAT, ARTIFACT_PROBLEM, BOILERPLATE = "repeat", "artifact", "boilerplate"
NO_REPEAT_NGRAM = 2

# Lead-ins that say nothing about the picture. "A photo of a dog" is a plain
# caption to many people; BLIP-large's habit is the longer forms and
# "a picture of"/"an image of", which the COCO protocol uses as its prompt.
_BOILERPLATE = re.compile(
    r"^\s*(?:(?:this|it)\s+(?:is\s+)?(?:an?\s+)?(?:image|picture|photo|photograph)\s+"
    r"(?:of|shows|showing|depicts|depicting)\b"
    r"|this\s+is\s+an?\s+(?:image|picture|photo|photograph)\s+of\b"
    r"|there\s+is\s+an?\s+(?:image|picture|photo|photograph)\s+of\b"
    r"|an?\s+(?:image|picture)\s+of\b)",
    re.IGNORECASE,
)


def detect(text: str, prompted: bool = False) -> tuple[str, ...]:
    """The problems of one caption's raw text: ``repeat``, ``artifact``, ``boilerplate``.

    A boilerplate lead-in counts only when the caption was not prompted (a
    prompt such as "a picture of " puts it there on purpose).

    >>> detect("a bald bald bald man"), detect("arafed man on a bench")
    (('repeat',), ('artifact',))
    >>> detect("this image shows a dog"), detect("a picture of a dog", prompted=True)
    (('boilerplate',), ())
    >>> detect("a man with a hat and a dog on a bench")
    ()
    """
    found = []
    if is_repetitive(text.split()):
        found.append(REPEAT)
    if ARTIFACT.search(text):
        found.append(ARTIFACT_PROBLEM)
    if not prompted and _BOILERPLATE.search(text):
        found.append(BOILERPLATE)
    return tuple(found)


def is_repetitive(words: list[str]) -> bool:
    """A decoding loop in ``words``.

    * a unit of 1 to 3 words three times in a row ("bald bald bald",
      "on top of on top of on top of");
    * a unit of 4 or more words twice in a row ("a hat on top of a hat on top of");
    * a 3-word sequence three times anywhere ("on top of a table on top of a
      chair on top of").
    """
    w = [x.lower() for x in words]
    n = len(w)
    for size in range(1, n // 2 + 1):
        times = 3 if size <= 3 else 2
        for start in range(n - size * times + 1):
            unit = w[start : start + size]
            if all(w[start + k * size : start + (k + 1) * size] == unit for k in range(1, times)):
                return True
    counts: dict[tuple[str, ...], int] = {}
    for i in range(n - 2):
        key = tuple(w[i : i + 3])
        counts[key] = counts.get(key, 0) + 1
        if counts[key] >= 3:
            return True
    return False


def fallbacks(options: CaptionOptions) -> list[tuple[str, CaptionOptions]]:
    """The re-decoding attempts for ``options``, in order, each with its name for the record."""
    size = min(options.no_repeat_ngram_size or NO_REPEAT_NGRAM, NO_REPEAT_NGRAM)
    blocked = options.replace(no_repeat_ngram_size=size)
    beams = max(3, options.num_beams, options.num_captions)
    wide = blocked.replace(num_beams=beams, do_sample=False)
    out = []
    for name, attempt in (
        (f"no_repeat_ngram={size}", blocked),
        (f"beams={beams},no_repeat_ngram={size}", wide),
    ):
        if attempt != options and all(attempt != seen for _, seen in out):
            out.append((name, attempt))
    return out


Redecode = Callable[[list[int], CaptionOptions], "list[list[Decoded]]"]
"""Decode the images at these indices (of the batch) again with these options."""


def guard_batch(
    results: list[list[Decoded]], options: CaptionOptions, check: Check, redecode: Redecode
) -> list[list[Decoded]]:
    """Re-decode the images of ``results`` with a degenerate caption; mark what was done.

    Images whose captions ``check`` finds clean come back untouched (same
    objects). Every caption of a re-decoded image gets a
    :class:`~blipcap.results.GuardReport` in its ``guard`` attribute.
    """
    problems = [_problems(per_image, check) for per_image in results]
    affected = [i for i, found in enumerate(problems) if found]
    if not affected:
        return results
    out = list(results)
    best = {i: (len(problems[i]), "none", results[i]) for i in affected}
    pending = list(affected)
    for name, attempt in fallbacks(options):
        if not pending:
            break
        # No more decoder rows at once than the first pass had (batch sizes were chosen for it).
        per_call = max(1, len(results) * _rows(options) // _rows(attempt))
        again = []
        for start in range(0, len(pending), per_call):
            again.extend(redecode(pending[start : start + per_call], attempt))
        still = []
        for i, per_image in zip(pending, again, strict=True):
            found = _problems(per_image, check)
            if len(found) < best[i][0]:
                best[i] = (len(found), name, per_image)
            if found:
                still.append(i)
        pending = still
    for i in affected:
        remaining, action, per_image = best[i]
        report = GuardReport(detected=problems[i], action=action, resolved=remaining == 0)
        out[i] = [d.with_guard(report) for d in per_image]
    return out


def _rows(options: CaptionOptions) -> int:
    """Decoder rows per image: beams, samples, or one."""
    if options.num_beams > 1:
        return options.num_beams
    return options.num_captions if options.do_sample else 1


def _problems(per_image: list[Decoded], check: Check) -> tuple[str, ...]:
    found: list[str] = []
    for tokens in per_image:
        found.extend(p for p in check(tokens) if p not in found)
    return tuple(found)
