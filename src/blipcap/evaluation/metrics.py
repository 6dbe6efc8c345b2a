"""COCO caption metrics through the reference implementation, pycocoevalcap.

BLEU-1..4, METEOR, ROUGE-L and CIDEr (CIDEr-D, as on the COCO leaderboard)
are computed by pycocoevalcap's own scorers on text tokenized by its PTB
tokenizer, exactly as ``COCOEvalCap.evaluate`` does - so the numbers are
comparable with the papers'. The tokenizer and METEOR are Java programs
shipped inside pycocoevalcap; SPICE additionally needs the Stanford CoreNLP
3.6.0 models, which pycocoevalcap downloads on first use. blipcap never
triggers that download: SPICE runs only when the models are already there.

Scores are on pycocoevalcap's scale (fractions; CIDEr around 1.3 for a good
COCO model). Papers multiply by 100: CIDEr 136.7 is 1.367 here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._optional import require
from ..errors import EvaluationError, MissingSystemDependencyError

METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
"""The metrics always computed, in report order (SPICE follows when available)."""

JAVA_PACKAGE = "default-jre-headless"
_CORENLP = "stanford-corenlp-3.6.0"


@dataclass
class MetricsResult:
    """Corpus scores, per-image scores and what was left out."""

    scores: dict[str, float]
    per_image: dict[Hashable, dict[str, float]]
    skipped: dict[str, str] = field(default_factory=dict)
    """metric -> why it was not computed."""
    timings: dict[str, float] = field(default_factory=dict)
    """seconds per stage: tokenize, BLEU, METEOR, ROUGE-L, CIDEr, SPICE."""
    images: int = 0


def _package_dir() -> Path:
    """pycocoevalcap's folder (a namespace package: it has no ``__file__``)."""
    pkg = require("pycocoevalcap", "eval", "COCO caption metrics")
    return Path(next(iter(pkg.__path__)))


def find_java() -> str:
    """The ``java`` executable, or a :class:`MissingSystemDependencyError` saying how to install it."""
    java = shutil.which("java")
    if java is None and os.environ.get("JAVA_HOME"):
        candidate = Path(os.environ["JAVA_HOME"]) / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            java = str(candidate)
    if java is None:
        raise MissingSystemDependencyError(
            "Java is needed for the COCO caption metrics (pycocoevalcap's PTB tokenizer and METEOR "
            "are Java programs) but no `java` was found on PATH. Install a Java runtime: on "
            f"Debian/Ubuntu `sudo apt-get install {JAVA_PACKAGE}`, on Fedora "
            "`sudo dnf install java-17-openjdk-headless`, on macOS `brew install openjdk`; "
            "or put its bin/ folder on PATH (or set JAVA_HOME)."
        )
    try:
        proc = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MissingSystemDependencyError(
            f"`{java} -version` failed ({exc}); install a working Java runtime "
            f"(Debian/Ubuntu: sudo apt-get install {JAVA_PACKAGE})"
        ) from exc
    if proc.returncode != 0:
        raise MissingSystemDependencyError(
            f"`{java} -version` failed: {(proc.stderr or proc.stdout).strip()[:300]}. Install a "
            f"working Java runtime (Debian/Ubuntu: sudo apt-get install {JAVA_PACKAGE})"
        )
    return java


def java_version() -> str | None:
    """The first line of ``java -version``, or None when there is no Java."""
    try:
        java = find_java()
    except MissingSystemDependencyError:
        return None
    proc = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return lines[0] if lines else None


@contextlib.contextmanager
def _java_on_path(java: str):
    # pycocoevalcap's METEOR and SPICE run plain "java": make sure it is the one we found.
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = str(Path(java).parent) + os.pathsep + old
    try:
        yield
    finally:
        os.environ["PATH"] = old


def spice_models_path() -> Path:
    """Where pycocoevalcap's SPICE expects the Stanford CoreNLP jars."""
    return _package_dir() / "spice" / "lib"


def spice_unavailable_reason() -> str | None:
    """None when SPICE can run; otherwise why not and how to enable it."""
    lib = spice_models_path()
    needed = [lib / f"{_CORENLP}.jar", lib / f"{_CORENLP}-models.jar"]
    absent = [p.name for p in needed if not p.is_file()]
    if not absent:
        return None
    return (
        f"SPICE skipped: it needs the Stanford CoreNLP 3.6.0 models ({', '.join(absent)} not in "
        f"{lib}). pycocoevalcap downloads them (the stanford-corenlp-full-2015-12-09 zip from "
        "nlp.stanford.edu) on first use; blipcap never does. To enable SPICE, run once with "
        f"internet access: {sys.executable} -c 'from pycocoevalcap.spice.get_stanford_models "
        "import get_stanford_models; get_stanford_models()'"
    )


def ptb_tokenize(
    captions: Mapping[Hashable, list[str]], java: str | None = None
) -> dict[Hashable, list[str]]:
    """Tokenize like pycocoevalcap's ``PTBTokenizer`` (same jar, flags and punctuation removal).

    Unlike that class it writes its temporary file in the system temp folder,
    not inside the installed package (which may be read-only), and keeps the
    Java program's chatter off stderr.
    """
    package = _package_dir()
    from pycocoevalcap.tokenizer import ptbtokenizer

    java = java or find_java()
    jar = package / "tokenizer" / ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR
    punctuation = set(ptbtokenizer.PUNCTUATIONS)
    keys: list[Hashable] = []
    lines: list[str] = []
    for key, texts in captions.items():
        for text in texts:
            keys.append(key)
            # One caption per line: a line break inside a caption would shift every later one.
            lines.append(text.replace("\r", " ").replace("\n", " "))
    out: dict[Hashable, list[str]] = {key: [] for key in captions}
    if not lines:
        return out
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt", delete=False) as f:
        f.write("\n".join(lines))
        name = f.name
    try:
        cmd = [java, "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer"]
        cmd += ["-preserveLines", "-lowerCase", name]
        proc = subprocess.run(cmd, capture_output=True)
    finally:
        os.unlink(name)
    if proc.returncode != 0:
        raise EvaluationError(
            f"the PTB tokenizer (Java) failed with exit code {proc.returncode}: "
            f"{proc.stderr.decode(errors='replace').strip()[-500:]}"
        )
    tokenized = proc.stdout.decode("utf-8").split("\n")
    if len(tokenized) < len(lines):
        raise EvaluationError(
            f"the PTB tokenizer returned {len(tokenized)} lines for {len(lines)} captions"
        )
    for key, line in zip(keys, tokenized[: len(lines)], strict=True):
        out[key].append(" ".join(w for w in line.rstrip().split(" ") if w not in punctuation))
    return out


def score(
    references: Mapping[Hashable, Iterable[str]],
    candidates: Mapping[Hashable, str],
    spice: bool | None = None,
) -> MetricsResult:
    """Score one candidate caption per image against that image's references.

    ``spice``: None = when its models are present, True = required (error
    when absent), False = never. Images without a candidate are an error:
    select the images to score before calling.
    """
    with Scorer(spice=spice) as scorer:
        return scorer.score(references, candidates)


class Scorer:
    """pycocoevalcap's scorers, with one METEOR Java process kept for several ``score`` calls.

    Starting METEOR (it loads a paraphrase table) takes seconds; scoring a
    set and its NoCaps domains with one process saves that each time.
    """

    def __init__(self, spice: bool | None = None):
        _package_dir()
        self.java = find_java()
        self.spice = spice
        self.spice_reason = None if spice is False else spice_unavailable_reason()
        if spice and self.spice_reason:
            raise EvaluationError(self.spice_reason)
        self._meteor: Any = None

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        meteor, self._meteor = self._meteor, None
        if meteor is not None:
            if meteor.lock.locked():
                # A failed call left the wrapper's non-reentrant lock held; its __del__ would
                # wait on it forever.
                meteor.lock.release()
            del meteor  # its __del__ stops the Java process

    def _meteor_score(self, gts: dict, res: dict) -> tuple[float, list[float]]:
        from pycocoevalcap.meteor.meteor import Meteor

        if self._meteor is None:
            with _java_on_path(self.java):
                self._meteor = Meteor()
        meteor = self._meteor
        try:
            return meteor.compute_score(gts, res)
        except (ValueError, OSError) as exc:
            err = b""
            if meteor.meteor_p.poll() is not None and meteor.meteor_p.stderr:
                err = meteor.meteor_p.stderr.read(2000)
            self.close()
            raise EvaluationError(
                f"METEOR (Java) failed: {exc} {err.decode(errors='replace').strip()}"
            ) from exc

    def score(
        self, references: Mapping[Hashable, Iterable[str]], candidates: Mapping[Hashable, str]
    ) -> MetricsResult:
        """See :func:`score`."""
        refs = {k: [str(r) for r in v] for k, v in references.items()}
        if not refs:
            raise EvaluationError("nothing to score: no image has both references and a caption")
        missing = [k for k in refs if k not in candidates]
        extra = [k for k in candidates if k not in refs]
        if missing or extra:
            raise EvaluationError(
                f"candidates and references must cover the same images ({len(missing)} without a "
                f"candidate, {len(extra)} without references)"
            )
        empty = [k for k, v in refs.items() if not v]
        if empty:
            raise EvaluationError(f"image {empty[0]!r} has no reference caption")

        timings: dict[str, float] = {}
        t = time.perf_counter()
        gts = ptb_tokenize(refs, self.java)
        res = ptb_tokenize({k: [str(candidates[k])] for k in refs}, self.java)
        timings["tokenize"] = time.perf_counter() - t

        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge

        scores: dict[str, float] = {}
        per_image: dict[Hashable, dict[str, float]] = {k: {} for k in gts}
        keys = list(gts)  # pycocoevalcap returns per-image scores in gts.keys() order

        def record(name: str, corpus: float, each: Iterable[Any]) -> None:
            scores[name] = float(corpus)
            for k, s in zip(keys, each, strict=True):
                per_image[k][name] = float(s)

        skipped: dict[str, str] = {}
        # pycocoevalcap prints progress to stdout; stdout may be carrying --json output.
        with contextlib.redirect_stdout(sys.stderr):
            t = time.perf_counter()
            bleu, bleu_each = Bleu(4).compute_score(gts, res, verbose=0)
            for n in range(4):
                record(f"BLEU-{n + 1}", bleu[n], bleu_each[n])
            timings["BLEU"] = time.perf_counter() - t

            t = time.perf_counter()
            m, m_each = self._meteor_score(gts, res)
            record("METEOR", m, m_each)
            timings["METEOR"] = time.perf_counter() - t

            t = time.perf_counter()
            r, r_each = Rouge().compute_score(gts, res)
            record("ROUGE-L", r, r_each)
            timings["ROUGE-L"] = time.perf_counter() - t

            t = time.perf_counter()
            c, c_each = Cider().compute_score(gts, res)
            record("CIDEr", c, c_each)
            timings["CIDEr"] = time.perf_counter() - t

            if self.spice is False:
                skipped["SPICE"] = "SPICE not requested (--no-spice)"
            elif self.spice_reason:
                skipped["SPICE"] = self.spice_reason
            else:
                t = time.perf_counter()
                try:
                    from pycocoevalcap.spice.spice import Spice

                    with _java_on_path(self.java):
                        s, s_each = Spice().compute_score(gts, res)
                    record("SPICE", s, (e["All"]["f"] for e in s_each))
                except (subprocess.CalledProcessError, OSError, ValueError) as exc:
                    if self.spice:
                        raise EvaluationError(f"SPICE failed: {exc}") from exc
                    skipped["SPICE"] = f"SPICE failed ({exc}); the other metrics are unaffected"
                timings["SPICE"] = time.perf_counter() - t
        return MetricsResult(scores, per_image, skipped, timings, images=len(keys))
