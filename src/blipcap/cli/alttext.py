"""``blipcap alt-text``: check, propose, review, write and report alt text (WCAG 1.1.1)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..alttext.doubts import DEFAULT_MIN_CONFIDENCE
from .common import cli_errors, model_options, show_progress, warn


@click.command(
    "alt-text",
    epilog="""\b
Examples:
  blipcap alt-text site/ --check                    # lint: exit 1 when anything needs fixing
  blipcap alt-text site/ --check --report alt.sarif # for GitHub code scanning
  blipcap alt-text site/                            # propose alt text: print a unified diff
  blipcap alt-text site/ --write --backup           # edit the files in place (FILE.bak kept)
  blipcap alt-text docs/ --review review.csv        # every proposal in a file to edit...
  blipcap alt-text --apply review.csv               # ...then apply the edited file

\b
What needs a person (charts and diagrams, image maps, links or buttons
whose purpose the page does not say, captions that look broken or that
the model is unsure of, images nothing could be proposed for) is never
written by --write or shown in the diff unless --accept-unreviewed is
given; --review lists it first. Alt text applied from a review is kept in
alt-text-approved.json and reused for the same image in later runs.
  blipcap alt-text index.html --report report.html --base-dir public/

\b
Exit status: 0 done (with --check: nothing to fix); 1 with --check when
something needs fixing, or when a file could not be read or written;
2 on usage or configuration errors; 3 when the model could not be found or
loaded.
""",
)
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path), metavar="PATH...")
@click.option("--check", is_flag=True, help="Only check (no model): list problems, exit 1 if any.")
@click.option("--write", is_flag=True, help="Write the proposed alt text into the files (atomic).")
@click.option(
    "--accept-unreviewed",
    is_flag=True,
    help="With --write or the diff: include drafts that need a person (charts, image maps, "
    "unclear links, doubtful captions).",
)
@click.option(
    "--backup", is_flag=True, help="With --write or --apply: keep the original as FILE.bak."
)
@click.option(
    "--review",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE.csv|.json",
    help="Write every proposed change to this file for a person to edit.",
)
@click.option(
    "--apply",
    "apply_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    metavar="FILE.csv|.json",
    help="Apply an edited review file.",
)
@click.option(
    "--report",
    "reports",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE.json|.html|.sarif",
    help="Write a report (repeatable): JSON, accessible HTML, or SARIF 2.1.0.",
)
@click.option(
    "--max-chars",
    type=click.IntRange(min=20, max=2000),
    default=150,
    show_default=True,
    help="Alt text length limit (screen readers split alt text at about 150 characters).",
)
@click.option(
    "--base-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Site root for root-relative image URLs (/img/a.png) [default: the directory given as PATH].",
)
@click.option(
    "--fetch-remote", is_flag=True, help="Fetch http(s) images (SSRF-safe: public addresses only)."
)
@click.option(
    "--cache",
    "cache_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Caption cache file [default: $BLIPCAP_CACHE_DIR or ~/.cache/blipcap/alt-text.sqlite].",
)
@click.option("--no-cache", is_flag=True, help="Neither read nor write the caption cache.")
@click.option(
    "--min-confidence",
    type=click.FloatRange(0.0, 1.0),
    default=DEFAULT_MIN_CONFIDENCE,
    show_default=True,
    help="Captions with a lower confidence score need a person (0: never on confidence).",
)
@click.option(
    "--approved",
    "approved_path",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE.json",
    help="Alt text approved in reviews, by image hash: reused by runs, added to by --apply "
    "[default: ./alt-text-approved.json].",
)
@click.option("--no-ocr", is_flag=True, help="Do not look for text in images.")
@model_options
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bars on stderr [default: when a terminal].",
)
@cli_errors
def alt_text(
    paths,
    check,
    write,
    accept_unreviewed,
    backup,
    review,
    apply_file,
    reports,
    max_chars,
    base_dir,
    fetch_remote,
    cache_path,
    no_cache,
    min_confidence,
    approved_path,
    no_ocr,
    model,
    backend,
    device,
    dtype,
    progress,
):
    """Check, generate, review and fix alt text in HTML and Markdown files (WCAG 1.1.1).

    Finds every text alternative (img, srcset and picture, input type=image,
    image-map areas, role="img", Markdown images and raw HTML in Markdown),
    judges it the way the W3C alt decision tree does (decorative, functional,
    image of text, informative, complex), and proposes alt text written from
    BLIP captions, OCR and the page itself. Only alt values change: encoding,
    line endings, quoting and attribute order stay as they were.
    """
    from ..alttext.engine import AltTextOptions, run_alt_text

    if check and (write or review or apply_file):
        raise click.UsageError("--check only reports; drop --write, --review or --apply")
    if apply_file and (write or review or paths):
        raise click.UsageError(
            "--apply takes the files from the review file: drop PATH, --write and --review"
        )
    if backup and not (write or apply_file):
        raise click.UsageError("--backup goes with --write or --apply")
    if accept_unreviewed and (check or review or apply_file):
        raise click.UsageError(
            "--accept-unreviewed goes with --write or the diff; a review file is reviewed by "
            "setting its apply column"
        )
    if not paths and not apply_file:
        raise click.UsageError("give at least one PATH (an HTML or Markdown file, or a directory)")
    progress = show_progress() if progress is None else progress

    from ..alttext.approved import ApprovedAlts, default_approved_path

    # --check reads no image, so it has no use for approvals (nor for a damaged store's error).
    approved = None if check else ApprovedAlts(approved_path or default_approved_path())
    if apply_file:
        return _apply(apply_file, max_chars, backup, approved)

    options = AltTextOptions(
        max_chars=max_chars,
        base_dir=base_dir,
        fetch_remote=fetch_remote,
        min_confidence=min_confidence,
    )
    if check:
        run = run_alt_text(list(paths), options, progress=progress)
    else:
        from ..alttext.cache import CaptionCache, default_cache_path
        from ..alttext.sources import BlipCaptions, OcrReader

        cache = CaptionCache(None if no_cache else (cache_path or default_cache_path()))
        captions = BlipCaptions(model, backend, device, dtype)
        with cache:
            run = run_alt_text(
                list(paths),
                options,
                captions=captions,
                ocr=None if no_ocr else OcrReader(),
                cache=cache,
                progress=progress,
                approved=approved if approved is not None and len(approved) else None,
            )
        if run.random_weights:
            warn(
                "the model has random weights (a test checkpoint): its captions are NOT real "
                "descriptions; never publish them"
            )
    for note in run.notes:
        warn(note)
    for page in run.failed_pages:
        warn(page.error or f"{page.path}: failed")
    from ..alttext.report import summary, write_report

    for path in reports:
        write_report(path, run, max_chars)
    s = summary(run)
    if check:
        _print_findings(run)
        warn(
            f"{s['to_fix']} of {s['elements']} text alternatives need fixing in {s['files']} files "
            "(WCAG 1.1.1)"
            + (f"; {s['files_failed']} files could not be read" if s["files_failed"] else "")
        )
        sys.exit(1 if s["to_fix"] or s["files_failed"] else 0)
    failed = bool(run.failed_pages)
    if review:
        from ..alttext.review import write_review

        n = write_review(review, run.pages)
        warn(
            f"wrote {n} proposed changes to {review}; edit it, then run: blipcap alt-text --apply {review}"
        )
    elif write:
        from ..alttext.write import edits_for, write_page

        written = files = 0
        for page in run.pages:
            if page.decoded is None:
                continue
            edits = edits_for(page.findings, unreviewed=accept_unreviewed)
            result = write_page(page.path, page.decoded, edits, backup=backup)
            if result.error:
                warn(result.error)
                failed = True
            elif result.edits:
                written += result.edits
                files += 1
        warn(f"wrote {written} alt text changes in {files} files")
    else:
        from ..alttext.write import apply_edits, edits_for, unified_diff

        for page in run.pages:
            edits = (
                edits_for(page.findings, unreviewed=accept_unreviewed)
                if page.decoded is not None
                else []
            )
            if edits:
                click.echo(
                    unified_diff(page.path, page.decoded, apply_edits(page.decoded, edits)),
                    nl=False,
                )
    _warn_manual(run, "review" if review else ("write" if accept_unreviewed else "hold"))
    drafts = s["drafts"]
    fate = {True: "with a draft in the review file", False: "drafts"}[bool(review)]
    if not review:
        fate += " included" if accept_unreviewed else " held back"
    held = f" ({drafts} {fate})" if drafts else ""
    reused = f", {s['approved_reused']} approved alts reused" if s["approved_reused"] else ""
    warn(
        f"{s['to_fix']} of {s['elements']} text alternatives need fixing; {s['ready']} changes "
        f"ready, {s['manual']} need a person{held}; {s['captioned']} images captioned, "
        f"{s['caption_cache_hits']} from cache{reused}"
    )
    sys.exit(1 if failed else 0)


def _print_findings(run) -> None:
    from ..alttext.report import _rel

    for f in run.findings:
        e = f.element
        for p in f.problems:
            click.echo(f"{_rel(e.file)}:{e.line}:{e.column}: {p.rule}: {p.message}")


def _warn_manual(run, mode: str) -> None:
    """One line per item that needs a person; ``mode``: "review", "write" (accepted) or "hold"."""
    from ..alttext.engine import person_reason
    from ..alttext.report import _rel

    for f in run.for_a_person:
        e = f.element
        if f.proposed is None or mode == "review":
            why = f"needs a person: {person_reason(f)}"
        elif mode == "write":
            why = f"draft used unreviewed (--accept-unreviewed): {person_reason(f)}"
        else:
            why = f"needs a person, draft held back: {person_reason(f)}"
        warn(f"{_rel(e.file)}:{e.line}:{e.column}: {why}")


def _apply(apply_file: Path, max_chars: int, backup: bool, approved) -> None:
    from ..alttext.review import apply_review

    result, _planned = apply_review(
        apply_file, max_chars=max_chars, backup=backup, approved=approved
    )
    for why in result.skipped:
        warn(why)
    failed = [w for w in result.written if w.error]
    for w in failed:
        warn(w.error or "")
    done = sum(w.edits for w in result.written if not w.error)
    warn(
        f"applied {done} reviewed changes in {sum(1 for w in result.written if w.edits)} files"
        + (f"; {result.approved} approved alts kept in {approved.path}" if result.approved else "")
    )
    sys.exit(1 if failed or result.skipped else 0)
