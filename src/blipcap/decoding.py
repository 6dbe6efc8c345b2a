"""Greedy decoding, beam search and nucleus sampling, written once for every backend.

A backend provides :class:`DecoderSession` objects (encode the images once,
then step the decoder) and an ``ops`` object (:mod:`blipcap.arrays`). The
semantics follow transformers' ``generate`` exactly - the parity suite checks
token-identical output against ``BlipForConditionalGeneration.generate``:

* lengths count the prompt (``[DEC]`` + prompt tokens), ``max_new_tokens``
  counts generated tokens;
* logits processors run in transformers' order: repetition penalty,
  no-repeat n-gram, minimum length (``[SEP]`` banned while too short);
  sampling warpers after them: temperature, top-k, top-p;
* beam search is transformers' vectorized algorithm (PR #35802): top ``2R``
  candidates per image, finished hypotheses scored ``logp / length**penalty``,
  the same early-stopping heuristic.

Every generated token also carries the log-probability the model gave it
(:class:`Decoded`): ``log_softmax`` of the decoder's logits at that step,
before any logits processor or sampling warper, so it measures the model and
not the search settings. Greedy and sampling read it from the logits they
already have (one ``logsumexp`` and one gather per step, on the device); beam
search carries it along with each hypothesis, as it carries the tokens. These
are what :class:`~blipcap.results.Confidence` summarizes.

With ``options.guard`` and a ``check`` function, :func:`generate` hands the
first result to :mod:`blipcap.guard`, which re-decodes only the images whose
captions are degenerate (see docs/captioning.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .options import CaptionOptions

NEG_INF = float("-inf")


class DecoderSession(Protocol):
    """One batch of images being decoded: ``rows_per_image`` rows (beams or samples) per image."""

    def step(self, input_ids: Any) -> Any:
        """Feed (rows, T) token ids at the next positions; return (rows, vocab) float32 logits."""

    def reorder(self, rows: Any) -> None:
        """Row i continues from what row ``rows[i]`` held (beam search)."""


class DecodingBackend(Protocol):
    ops: Any

    def start(self, pixel_values: np.ndarray, rows_per_image: int, max_len: int) -> DecoderSession:
        """Encode (B, 3, H, W) images and prepare a decoder session for B x rows_per_image rows."""


@dataclass(frozen=True)
class SpecialTokens:
    eos: int
    pad: int


class Decoded(list):
    """Generated token ids (no eos/pad) with the log-probability the model gave each.

    It *is* the plain ``list`` of ints that every consumer of token ids
    (captioner, export verification, the parity suite) compares and decodes;
    the extras ride along as attributes:

    * ``logprobs``: one per generated token, plus one for the end-of-caption
      token when the caption ended by itself (``ended``) - the model chose to
      stop, which is part of what it is confident about;
    * ``guard``: a :class:`~blipcap.results.GuardReport` when the degeneration
      guard looked at this caption and found something, else None.
    """

    def __init__(
        self,
        tokens: Sequence[int] = (),
        logprobs: Sequence[float] = (),
        ended: bool = False,
        guard: Any = None,
    ):
        super().__init__(tokens)
        self.logprobs = list(logprobs)
        self.ended = ended
        self.guard = guard

    def with_guard(self, report: Any) -> Decoded:
        """The same tokens and log-probabilities, marked with the guard's ``report``."""
        return Decoded(self, self.logprobs, self.ended, guard=report)


Check = Callable[[list[int]], tuple[str, ...]]
"""What is wrong with one caption's tokens (e.g. ``("repeat",)``); empty when nothing is."""


def generate(
    backend: DecodingBackend,
    pixel_values: np.ndarray,
    prompt_ids: list[int],
    options: CaptionOptions,
    special: SpecialTokens,
    check: Check | None = None,
) -> list[list[Decoded]]:
    """Return, per image, ``options.num_captions`` :class:`Decoded` token lists.

    With ``check`` and ``options.guard``, images whose captions ``check`` finds
    degenerate are decoded again (only those) by :func:`blipcap.guard.guard_batch`.
    """
    out = _generate_once(backend, pixel_values, prompt_ids, options, special)
    if check is None or not options.guard:
        return out
    from .guard import guard_batch

    def again(images: list[int], opts: CaptionOptions) -> list[list[Decoded]]:
        subset = getattr(backend, "subset", None)  # a backend holding encoded images selects them
        part = subset(images) if subset is not None else backend
        return _generate_once(part, pixel_values[images], prompt_ids, opts, special)

    return guard_batch(out, options, check, again)


def _generate_once(backend, pixel_values, prompt_ids, options, special) -> list[list[Decoded]]:
    min_len, max_len = options.token_limits(len(prompt_ids))
    if options.num_beams > 1:
        seqs, lps = _beam_search(
            backend, pixel_values, prompt_ids, options, special, min_len, max_len
        )
    else:
        seqs, lps = _greedy_or_sample(
            backend, pixel_values, prompt_ids, options, special, min_len, max_len
        )
    p = len(prompt_ids)
    return [
        [_decoded(row, lp, p, special.eos) for row, lp in zip(per_image, lp_image, strict=True)]
        for per_image, lp_image in zip(seqs, lps, strict=True)
    ]


def _decoded(row: list[int], logprobs: list[float], start: int, eos: int) -> Decoded:
    tokens = []
    for t in row[start:]:
        if t == eos:
            break
        tokens.append(int(t))
    ended = start + len(tokens) < len(row)
    n = len(tokens) + (1 if ended else 0)
    return Decoded(tokens, logprobs[start : start + n], ended)


def _initial(ops, prompt_ids: list[int], rows: int, max_len: int, pad: int):
    seqs = ops.full((rows, max_len), pad, "int64")
    seqs[:, : len(prompt_ids)] = ops.tensor(prompt_ids)[None, :]
    return seqs


def process_scores(ops, seqs, scores, cur_len: int, min_len: int, o: CaptionOptions, eos: int):
    """transformers' logits processors, in its order. ``seqs`` holds ``cur_len`` tokens per row."""
    if o.repetition_penalty != 1.0:
        seen = seqs[:, :cur_len]
        got = ops.take_along(scores, seen, axis=1)
        got = ops.where(got < 0, got * o.repetition_penalty, got / o.repetition_penalty)
        ops.put_along(scores, seen, got)
    if o.no_repeat_ngram_size and cur_len + 1 >= o.no_repeat_ngram_size:
        for row, banned in enumerate(
            _banned_ngrams(ops.to_numpy(seqs[:, :cur_len]), o.no_repeat_ngram_size)
        ):
            if banned:
                scores[row, ops.tensor(sorted(banned))] = NEG_INF
    if cur_len < min_len:
        scores[:, eos] = NEG_INF
    return scores


def _banned_ngrams(seqs: np.ndarray, n: int) -> list[set[int]]:
    out = []
    for row in seqs.tolist():
        prefix = tuple(row[len(row) - n + 1 :]) if n > 1 else ()
        banned = {
            row[i + n - 1] for i in range(len(row) - n + 1) if tuple(row[i : i + n - 1]) == prefix
        }
        out.append(banned)
    return out


def _warp(ops, scores, o: CaptionOptions):
    """Sampling warpers (temperature, top-k, top-p) as transformers applies them."""
    if o.temperature != 1.0:
        scores = scores / o.temperature
    if o.top_k:
        k = min(o.top_k, scores.shape[-1])
        kth = ops.topk(scores, k)[0][:, -1:]
        scores = ops.where(scores < kth, NEG_INF, scores)
    if o.top_p < 1.0:
        sorted_scores, order = ops.sort(scores, descending=False)
        cum = ops.cumsum(ops.softmax(sorted_scores))
        remove = cum <= (1 - o.top_p)
        remove[:, -1] = False  # keep at least one token
        scores = ops.where(ops.scatter(remove, order, remove), NEG_INF, scores)
    return scores


def _greedy_or_sample(backend, pixels, prompt_ids, o: CaptionOptions, special, min_len, max_len):
    ops = backend.ops
    images = pixels.shape[0]
    r = o.num_captions if o.do_sample else 1
    rows = images * r
    seqs = _initial(ops, prompt_ids, rows, max_len, special.pad)
    cur = len(prompt_ids)
    session = backend.start(pixels, r, max_len)
    rng = ops.generator(o.seed) if o.do_sample else None
    unfinished = ops.full((rows,), True, "bool")
    # Log-probability of each chosen token, at its position (float32, on the device).
    logprobs = ops.full((rows, max_len), 0.0, "float32")
    logits = session.step(seqs[:, :cur])
    while True:
        logits = ops.astype(logits, "float32")
        # Taken before the processors, which change the scores in place. Only the
        # repetition penalty changes a score that can still be chosen.
        norm = ops.logsumexp(logits)
        raw = ops.copy(logits) if o.repetition_penalty != 1.0 else None
        scores = process_scores(ops, seqs, logits, cur, min_len, o, special.eos)
        if o.do_sample:
            next_tokens = ops.multinomial(ops.softmax(_warp(ops, scores, o)), rng)
        else:
            next_tokens = ops.argmax(scores)
        chosen = ops.take_along(scores if raw is None else raw, next_tokens[:, None], axis=1)
        logprobs[:, cur] = chosen[:, 0] - norm
        next_tokens = ops.where(unfinished, next_tokens, special.pad)
        seqs[:, cur] = next_tokens
        cur += 1
        unfinished = unfinished & (next_tokens != special.eos)
        if cur >= max_len or not ops.any(unfinished):
            break
        logits = session.step(seqs[:, cur - 1 : cur])
    host = ops.to_numpy(seqs[:, :cur])
    host_lp = ops.to_numpy(logprobs[:, :cur])
    return (
        [host[i * r : (i + 1) * r].tolist() for i in range(images)],
        [host_lp[i * r : (i + 1) * r].tolist() for i in range(images)],
    )


def _beam_search(backend, pixels, prompt_ids, o: CaptionOptions, special, min_len, max_len):
    ops = backend.ops
    b, nb = pixels.shape[0], o.num_beams
    keep = 2 * nb  # max(2, 1 + number of eos tokens) * num_beams
    prompt_len = cur = len(prompt_ids)
    lp, early = o.length_penalty, o.early_stopping

    running = _initial(ops, prompt_ids, b * nb, max_len, special.pad).reshape(b, nb, max_len)
    finished = ops.copy(running)
    # Per-token log-probabilities of every hypothesis, moved with its tokens.
    running_lp = ops.full((b, nb, max_len), 0.0, "float32")
    finished_lp = ops.copy(running_lp)
    running_scores = ops.full((b, nb), 0.0, "float32")
    running_scores[:, 1:] = -1e9  # only the first beam is live at the start
    finished_scores = ops.full((b, nb), -1e9, "float32")
    is_finished = ops.full((b, nb), False, "bool")
    can_improve = ops.full((b, 1), True, "bool")
    top_nb_mask = ops.tensor([True] * nb + [False] * (keep - nb), "bool")[None, :]
    batch_offset = (ops.arange(b) * nb)[:, None]

    session = backend.start(pixels, nb, max_len)
    logits = session.step(running.reshape(b * nb, max_len)[:, :cur])
    while True:
        flat = running.reshape(b * nb, max_len)
        token_lp = ops.log_softmax(logits)
        raw = ops.copy(token_lp) if o.repetition_penalty != 1.0 else None
        log_probs = process_scores(ops, flat, token_lp, cur, min_len, o, special.eos)
        vocab = log_probs.shape[-1]
        unprocessed = (log_probs if raw is None else raw).reshape(b, nb * vocab)
        log_probs = log_probs.reshape(b, nb, vocab) + running_scores[:, :, None]
        top_scores, top_idx = ops.topk(log_probs.reshape(b, nb * vocab), keep)
        top_beam = top_idx // vocab
        top_seqs = ops.take_along(running, top_beam, axis=1)
        top_seqs[:, :, cur] = top_idx % vocab
        top_lp = ops.take_along(running_lp, top_beam, axis=1)
        top_lp[:, :, cur] = ops.take_along(unprocessed, top_idx, axis=1)
        hits = (top_seqs[:, :, cur] == special.eos) | (cur + 1 >= max_len)

        # Next running beams: the best candidates that did not just finish.
        live_scores = top_scores + ops.astype(hits, "float32") * -1e9
        next_idx = ops.topk(live_scores, nb)[1]
        running = ops.take_along(top_seqs, next_idx, axis=1)
        running_lp = ops.take_along(top_lp, next_idx, axis=1)
        running_scores = ops.take_along(live_scores, next_idx, axis=1)
        source_rows = (ops.take_along(top_beam, next_idx, axis=1) + batch_offset).reshape(b * nb)

        # Finished hypotheses: merge the just-finished top candidates, keep the best nb.
        just_done = hits & top_nb_mask
        done_scores = top_scores / float((cur + 1 - prompt_len) ** lp)
        if early is True:
            done_scores = done_scores + ops.astype(ops.all_axis(is_finished, 1), "float32") * -1e9
        done_scores = done_scores + ops.astype(~can_improve, "float32") * -1e9
        done_scores = done_scores + ops.astype(~just_done, "float32") * -1e9
        merged_scores = ops.cat([finished_scores, done_scores], axis=1)
        best = ops.topk(merged_scores, nb)[1]
        finished = ops.take_along(ops.cat([finished, top_seqs], axis=1), best, axis=1)
        finished_lp = ops.take_along(ops.cat([finished_lp, top_lp], axis=1), best, axis=1)
        finished_scores = ops.take_along(merged_scores, best, axis=1)
        is_finished = ops.take_along(ops.cat([is_finished, just_done], axis=1), best, axis=1)

        cur += 1
        # transformers' early-stop heuristic: can a running beam still beat the worst finished one?
        if early == "never" and lp > 0.0:
            best_len = max_len - prompt_len
        else:
            best_len = cur - prompt_len
        best_running = running_scores[:, :1] / float(best_len**lp)
        worst_done = ops.where(is_finished, ops.min(finished_scores, 1), -1e9)
        can_improve = can_improve & ops.any_axis(best_running > worst_done, 1)
        stop = not ops.any(can_improve) or (early is True and ops.all(is_finished)) or ops.all(hits)
        if stop:
            break
        session.reorder(source_rows)
        logits = session.step(running.reshape(b * nb, max_len)[:, cur - 1 : cur])
    host = ops.to_numpy(finished[:, : o.num_captions])
    host_lp = ops.to_numpy(finished_lp[:, : o.num_captions])
    return [host[i].tolist() for i in range(b)], [host_lp[i].tolist() for i in range(b)]
