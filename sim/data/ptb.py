"""Penn Treebank characters (Mikolov's ``ptb.char.{train,valid,test}.txt``), gzip or raw.

Format: one sentence per line, characters separated by spaces, ``_`` between words (``<unk>`` and
``N`` are spelled out character by character: ``< u n k >``). Each line end becomes one
end-of-sentence symbol :data:`EOS` (``"\\n"``), so a model also predicts where a sentence ends (the
usual PTB character setup: 49 symbols + end of line = 50). Vocabulary: the sorted symbols of the
training split plus :data:`EOS`; a symbol in valid/test that is not in it is an error naming the
file, the symbol and the line.

Found like every dataset (:mod:`sim.data.common`), in a ``ptb/`` sub-folder or directly. The
SHA-256 of each *decompressed* file is checked against the published files (the values of
``shared/data/ptb/SHA256SUMS``); a truncated or corrupt file raises :class:`DatasetCorruptError`
naming it. There is no download and no fallback.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .common import DatasetCorruptError, DatasetError, candidate_dirs, find_file, read_bytes, sha256

EOS = "\n"                 # end-of-sentence symbol: one per line of the files
SPLITS = ("train", "valid", "test")
PTB_CHAR_FILES = {s: f"ptb.char.{s}.txt" for s in SPLITS}
# SHA-256 of the decompressed files (= shared/data/ptb/SHA256SUMS)
PTB_CHAR_SHA256 = {
    "ptb.char.train.txt": "e313d91425e06c4f0a8fb6e881dcce0c291f2a0e9f4dda54833069b122f91da9",
    "ptb.char.valid.txt": "21661f63ec355085879458b6524644d4add5573541b4be14fb52ab2e2e995eb8",
    "ptb.char.test.txt": "1ef5607ac3c463b16e38bfe7900dd3bfc91de5a96e0f21e7eab5188b465b8ebe",
}
_CACHE: dict = {}           # the last corpus read (keyed by paths, sizes, mtimes, verify)


@dataclass
class CharCorpus:
    """A character corpus: symbol indices per split (int64 arrays) and the vocabulary."""

    name: str
    vocab: list            # symbols (str), sorted; index = position
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    source: str
    notes: dict = field(default_factory=dict)

    @property
    def n_symbols(self) -> int:
        return len(self.vocab)

    def encode(self, symbols) -> np.ndarray:
        idx = {s: i for i, s in enumerate(self.vocab)}
        return np.array([idx[s] for s in symbols], dtype=np.int64)

    def text_to_symbols(self, text: str) -> list:
        """Plain text -> symbols: a space is the word boundary ``_``, a newline the end of sentence."""
        out = []
        for ch in text:
            s = "_" if ch == " " else EOS if ch == "\n" else ch
            if s not in self.vocab:
                raise ValueError(f"character {ch!r} is not in the {self.name} vocabulary")
            out.append(s)
        return out

    def symbols_to_text(self, idx) -> str:
        return "".join(" " if self.vocab[int(i)] == "_" else self.vocab[int(i)] for i in idx)


def _find(folder: Path, stem: str) -> Path | None:
    return find_file(folder, ("ptb", ""), stem, (".gz", ".xz", ""))


def _decode(raw: bytes, path) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise DatasetCorruptError(f"{path}: not an ASCII text file (byte {exc.start}: "
                                  f"{raw[exc.start:exc.start + 1]!r}; corrupt?)") from exc


def _symbols(text: str, path) -> tuple[str, np.ndarray]:
    """All symbols of a file as one string (one character per symbol, EOS per line), line starts."""
    lines = text.split("\n")
    while lines and not lines[-1].strip():
        lines.pop()                           # the final newline ends the last line (the files
                                              # put a space after it: "... >\n ")
    parts, starts, n = [], np.empty(len(lines), dtype=np.int64), 0
    for k, line in enumerate(lines):
        toks = line.split()
        s = "".join(toks) + EOS
        if len(s) != len(toks) + 1:
            bad = next(t for t in toks if len(t) != 1)
            raise DatasetCorruptError(f"{path}, line {k + 1}: token {bad!r} is not a single character "
                                      "(not a PTB character file, or corrupt)")
        starts[k] = n
        parts.append(s)
        n += len(s)
    return "".join(parts), starts


def _index(sym: str, table: np.ndarray, path, starts: np.ndarray, vocab) -> np.ndarray:
    codes = np.frombuffer(sym.encode("ascii"), dtype=np.uint8)
    out = table[codes]
    bad = np.flatnonzero(out < 0)
    if bad.size:
        pos = int(bad[0])
        line = int(np.searchsorted(starts, pos, side="right"))
        raise DatasetError(f"{path}, line {line}: symbol {sym[pos]!r} is not in the training vocabulary "
                           f"({len(vocab)} symbols from the train split)")
    return out.astype(np.int64)


def load_ptb_char(data_dir=None, verify: bool = True) -> CharCorpus:
    """PTB characters: vocabulary from train (+ EOS), each split as int64 symbol indices."""
    searched = candidate_dirs(data_dir)
    for folder in searched:
        paths = {s: _find(folder, stem) for s, stem in PTB_CHAR_FILES.items()}
        if all(paths.values()):
            break
        if any(paths.values()):
            missing = [PTB_CHAR_FILES[s] for s, p in paths.items() if p is None]
            raise DatasetError(f"{folder}: PTB characters incomplete, missing {', '.join(missing)}")
    else:
        raise DatasetError("PTB character files (ptb.char.{train,valid,test}.txt[.gz]) not found in: "
                           + ", ".join(str(p) for p in searched))
    key = (tuple(str(p.resolve()) for p in paths.values()),
           tuple((p.stat().st_size, p.stat().st_mtime_ns) for p in paths.values()), verify)
    if key in _CACHE:                        # same files, same process (mcasim sample, tests)
        return _CACHE[key]
    texts = {}
    for s, p in paths.items():
        raw = read_bytes(p)
        stem = PTB_CHAR_FILES[s]
        if verify:
            digest = sha256(raw)
            if digest != PTB_CHAR_SHA256[stem]:
                raise DatasetCorruptError(f"{p}: SHA-256 {digest[:16]}… does not match the published {stem} "
                                          "(truncated, corrupt or a different file)")
        texts[s] = _symbols(_decode(raw, p), p)
    for s in SPLITS:
        if not len(texts[s][1]):
            raise DatasetCorruptError(f"{paths[s]}: no lines (empty or truncated file)")
    vocab = sorted(set(texts["train"][0]))
    table = np.full(256, -1, dtype=np.int64)
    for i, ch in enumerate(vocab):
        table[ord(ch)] = i
    arrs = {s: _index(texts[s][0], table, paths[s], texts[s][1], vocab) for s in SPLITS}
    corpus = CharCorpus("ptb-char", vocab, arrs["train"], arrs["valid"], arrs["test"],
                        source=str(paths["train"].parent),
                        notes={"lines": {s: int(len(texts[s][1])) for s in SPLITS}})
    for a in (corpus.train, corpus.valid, corpus.test):
        a.setflags(write=False)              # shared by every user of the cache
    _CACHE.clear()
    _CACHE[key] = corpus
    return corpus
