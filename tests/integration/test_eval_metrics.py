"""The metrics equal pycocoevalcap's own, on hand-checkable cases (needs Java).

The reference side of each comparison calls pycocoevalcap exactly the way
``COCOEvalCap.evaluate`` does: its PTBTokenizer, then Bleu(4), Meteor, Rouge
and Cider on the tokenized dicts.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

pytest.importorskip("pycocoevalcap")
if shutil.which("java") is None:  # CI installs it (scripts/system-deps.sh); say so when absent
    pytest.skip(
        "Java is not installed (apt-get install default-jre-headless)", allow_module_level=True
    )

from blipcap.errors import EvaluationError  # noqa: E402
from blipcap.evaluation.metrics import (  # noqa: E402
    METRICS,
    Scorer,
    ptb_tokenize,
    spice_unavailable_reason,
)

pytestmark = pytest.mark.slow  # METEOR's Java start-up takes seconds

REFS = {
    # Hand-checkable: BLEU-1 = 4/6 (clipped unigrams a, cat, on, mat), BLEU-2 = sqrt(4/6 * 1/5).
    "cat": ["a cat is on the mat"],
    "car": [
        "A blue car drives down the street.",
        "a car on a city street",
        "The blue car is driving",
    ],
    "apple": ["A red apple sits on a wooden table.", "An apple on a table"],
    "bikes": ["Two people ride bikes along a river", "people cycling by the water"],
}
CANDS = {
    "cat": "a cat sat on a mat",
    "car": "a blue car driving down a street",
    "apple": "an apple on a wooden table",
    "bikes": "",  # an empty caption scores zero, it does not crash
}

# Identical candidates and references, no word shared between images (so no n-gram
# has zero CIDEr weight) and at least four words (so 4-grams exist).
IDENTICAL = {
    1: "red apple sits on table",
    2: "blue car drives down street",
    3: "green frog jumps into pond",
}


def pycocoevalcap_reference(*cases):
    """pycocoevalcap's own results for each (refs, cands) case, one METEOR process for all."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    meteor = Meteor()
    results = []
    for refs, cands in cases:
        gts = tok.tokenize({k: [{"caption": c} for c in v] for k, v in refs.items()})
        res = tok.tokenize({k: [{"caption": cands[k]}] for k in refs})
        out = {}
        b, b_each = Bleu(4).compute_score(gts, res, verbose=0)
        for n in range(4):
            out[f"BLEU-{n + 1}"] = (b[n], list(b_each[n]))
        out["METEOR"] = meteor.compute_score(gts, res)
        out["ROUGE-L"] = Rouge().compute_score(gts, res)
        c, c_each = Cider().compute_score(gts, res)
        out["CIDEr"] = (c, list(c_each))
        results.append((list(gts), out))
    del meteor
    return results


@pytest.fixture(scope="module")
def scored():
    with Scorer(spice=False) as scorer:
        mixed = scorer.score(REFS, CANDS)
        identical = scorer.score({k: [v] for k, v in IDENTICAL.items()}, IDENTICAL)
    return mixed, identical


@pytest.fixture(scope="module")
def reference():
    return pycocoevalcap_reference(
        (REFS, CANDS), ({k: [v] for k, v in IDENTICAL.items()}, IDENTICAL)
    )


def test_equal_to_pycocoevalcap_corpus_and_per_image(scored, reference):
    for ours, (keys, ref) in zip(scored, reference, strict=True):
        assert list(ours.scores) == list(METRICS)
        for name in METRICS:
            corpus, each = ref[name]
            assert ours.scores[name] == corpus, name  # the very same float
            assert [ours.per_image[k][name] for k in keys] == [float(x) for x in each], name


def test_hand_checked_bleu(scored):
    mixed, _ = scored
    cat = mixed.per_image["cat"]
    assert cat["BLEU-1"] == pytest.approx(4 / 6, abs=1e-6)
    assert cat["BLEU-2"] == pytest.approx(math.sqrt(4 / 6 * 1 / 5), abs=1e-6)
    assert mixed.per_image["bikes"] == {
        "BLEU-1": pytest.approx(0, abs=1e-6),
        "BLEU-2": pytest.approx(0, abs=1e-6),
        "BLEU-3": pytest.approx(0, abs=1e-6),
        "BLEU-4": pytest.approx(0, abs=1e-6),
        "METEOR": 0.0,
        "ROUGE-L": 0.0,
        "CIDEr": 0.0,
    }


def test_identical_candidates_score_perfectly(scored):
    _, identical = scored
    for n in range(1, 5):
        assert identical.scores[f"BLEU-{n}"] == pytest.approx(1.0, abs=1e-6)
    assert identical.scores["ROUGE-L"] == pytest.approx(1.0)
    # CIDEr-D is 10 x the mean cosine similarity over 1..4-grams: 10 for a perfect match.
    assert identical.scores["CIDEr"] == pytest.approx(10.0)
    assert all(s["CIDEr"] == pytest.approx(10.0) for s in identical.per_image.values())
    assert identical.skipped == {"SPICE": "SPICE not requested (--no-spice)"}


def test_tokenizer_matches_pycocoevalcap():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    captions = {
        1: ["A Cat, sitting.", 'He said "hi" -- it\'s fine...'],
        2: ["Café naïve résumé", "line\nbreak"],
        3: [".", "  spaced   out  "],
    }
    expected = PTBTokenizer().tokenize(
        {k: [{"caption": c} for c in v] for k, v in captions.items()}
    )
    got = ptb_tokenize(captions)
    assert got == expected
    assert got[1] == ["a cat sitting", "he said hi it 's fine"]


def test_spice_is_skipped_with_instructions_when_models_are_absent():
    reason = spice_unavailable_reason()
    lib = Path(__import__("pycocoevalcap").__path__[0]) / "spice" / "lib"
    if (lib / "stanford-corenlp-3.6.0-models.jar").exists():
        pytest.skip("SPICE models are installed here")
    assert reason.startswith("SPICE skipped: it needs the Stanford CoreNLP 3.6.0 models")
    assert "get_stanford_models()" in reason
    with pytest.raises(EvaluationError, match="SPICE skipped"):
        Scorer(spice=True)


def test_inputs_must_cover_the_same_images():
    with (
        Scorer(spice=False) as scorer,
        pytest.raises(EvaluationError, match="1 without a candidate"),
    ):
        scorer.score({1: ["a"], 2: ["b"]}, {1: "a"})
