"""Random-access text sources selected by a config: text files, JSONL, array_record, tfds.

Every source has `len`, `__getitem__(i) -> str` and a deterministic `repr`, and holds only this
process's part of the corpus. A config (ConfigDict or dict) picks the kind:

    kind='text'         path=GLOB(s), text_split='paragraph'|'line'|'file'
    kind='jsonl'        path=GLOB(s), text_key='text'
    kind='array_record' path=GLOB(s), text_key='text', record_format='auto'|'text'|'json'
    kind='tfds'         name=..., split='train', data_dir=None, text_key='text'

Paths may be local, anything `etils.epath` opens (gs://...), or `bundled:<file>` (the corpus
shipped in colajax/data/corpus). `.gz` files are decompressed.

Sharding: process k of P gets a disjoint part; together the parts cover the corpus. Text/JSONL
with at least P files are split by file (file k, k+P, ...; a process reads only its own files);
otherwise, and for array_record/tfds, by a contiguous index range [k*N//P, (k+1)*N//P).
Text/JSONL sources keep their part in memory (fine up to a few GB); use array_record or tfds
for larger corpora.

Bytes that are not valid UTF-8 are replaced by U+FFFD (`errors='replace'`), never dropped.
"""

import gzip
import io
import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

from etils import epath

from colajax.data import corpus

KINDS = ("text", "jsonl", "array_record", "tfds")
TEXT_SPLITS = ("paragraph", "line", "file")
# Fields a source config may set (others raise); fields another kind uses are ignored.
FIELDS = {"path", "text_key", "text_split", "record_format", "name", "split", "data_dir"}
_WILDCARDS = re.compile(r"[*?\[]")


def decode_text(data: bytes | str) -> str:
    """UTF-8 decode with U+FFFD for invalid bytes (the documented replacement policy)."""
    return data if isinstance(data, str) else bytes(data).decode("utf-8", errors="replace")


def expand_paths(spec: str | Sequence[str]) -> list[str]:
    """Expands globs (comma-separated or a list) into sorted existing file paths."""
    patterns = spec.split(",") if isinstance(spec, str) else list(spec)
    patterns = [corpus.resolve(p.strip()) for p in patterns if str(p).strip()]
    if not patterns:
        raise ValueError("no data path given: set the source's `path` to a file or glob.")
    paths: list[str] = []
    for pattern in patterns:
        if not _WILDCARDS.search(pattern):
            if not epath.Path(pattern).exists():
                raise FileNotFoundError(f"data file {pattern!r} does not exist; check the path.")
            if epath.Path(pattern).is_dir():
                raise ValueError(f"{pattern!r} is a directory; give a glob such as 'dir/*.jsonl'.")
            paths.append(pattern)
            continue
        parts = pattern.split("/")
        first = next(i for i, part in enumerate(parts) if _WILDCARDS.search(part))
        base = "/".join(parts[:first]) or "."
        matches = sorted(str(p) for p in epath.Path(base).glob("/".join(parts[first:])))
        matches = [m for m in matches if epath.Path(m).is_file()]
        if not matches:
            raise FileNotFoundError(f"glob {pattern!r} matches no file; check the path.")
        paths.extend(matches)
    return paths


def _open_text(path: str) -> io.TextIOBase:
    raw = epath.Path(path).open("rb")
    if path.endswith(".gz"):
        raw = gzip.GzipFile(fileobj=raw)
    return io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")


def _split_text(text: str, text_split: str) -> list[str]:
    if text_split == "file":
        parts = [text]
    elif text_split == "line":
        parts = text.splitlines()
    else:
        parts = re.split(r"\n[ \t\r]*\n", text)
    return [p.strip() for p in parts if p.strip()]


def _jsonl_texts(path: str, text_key: str) -> Iterator[str]:
    with _open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno} is not valid JSON ({e}).") from e
            yield _record_text(record, text_key, f"{path}:{lineno}")


def _record_text(record: Any, text_key: str, where: str) -> str:
    if not isinstance(record, dict) or text_key not in record:
        keys = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise ValueError(f"{where} has no {text_key!r} field (found {keys}); set `text_key`.")
    return decode_text(record[text_key])


def iter_file_texts(
    paths: Sequence[str], *, text_key: str = "text", text_split: str = "paragraph"
) -> Iterator[str]:
    """Documents of text or JSONL files (JSONL if the name has `.jsonl`/`.json`)."""
    for path in paths:
        name = path.removesuffix(".gz")
        if name.endswith((".jsonl", ".json")):
            yield from _jsonl_texts(path, text_key)
        else:
            with _open_text(path) as f:
                yield from _split_text(f.read(), text_split)


class FileTextSource:
    """Text or JSONL files, this process's documents held in memory (loaded on first use)."""

    def __init__(
        self,
        kind: str,
        paths: Sequence[str],
        *,
        text_key: str = "text",
        text_split: str = "paragraph",
        process_index: int = 0,
        process_count: int = 1,
    ):
        if text_split not in TEXT_SPLITS:
            raise ValueError(f"text_split must be one of {TEXT_SPLITS}, got {text_split!r}.")
        self.kind, self.text_key, self.text_split = kind, text_key, text_split
        self.all_paths = list(paths)
        self.shard = (process_index, process_count)
        self.by_file = len(self.all_paths) >= process_count
        own = self.all_paths[process_index::process_count]
        self.paths = own if self.by_file else self.all_paths
        self._docs: list[str] | None = None

    def _load(self) -> list[str]:
        if self._docs is None:
            if self.kind == "jsonl":
                docs = [t for p in self.paths for t in _jsonl_texts(p, self.text_key)]
            else:
                docs = []
                for path in self.paths:
                    with _open_text(path) as f:
                        docs.extend(_split_text(f.read(), self.text_split))
            docs = [d for d in docs if d.strip()]
            if not docs:
                raise ValueError(f"{self!r} holds no documents: the corpus is empty.")
            if not self.by_file:
                k, n = self.shard
                docs = docs[k * len(docs) // n : (k + 1) * len(docs) // n]
                if not docs:
                    raise ValueError(f"{self!r}: fewer documents than processes ({n}).")
            self._docs = docs
        return self._docs

    def __len__(self) -> int:
        return len(self._load())

    def __getitem__(self, index: int) -> str:
        return self._load()[index]

    def __getstate__(self):
        return {**self.__dict__, "_docs": None}

    def __repr__(self) -> str:
        extra = (
            f"text_key={self.text_key!r}"
            if self.kind == "jsonl"
            else f"text_split={self.text_split!r}"
        )
        return (
            f"FileTextSource(kind={self.kind!r}, paths={self.all_paths!r}, {extra}, "
            f"shard={self.shard[0]}/{self.shard[1]})"
        )


class RecordTextSource:
    """array_record files or a tfds data source, restricted to this process's index range.

    Records are UTF-8 text, JSON bytes (`{text_key: ...}`), or tfds feature dicts.
    """

    def __init__(self, kind: str, spec: dict, process_index: int = 0, process_count: int = 1):
        self.kind, self.spec = kind, dict(spec)
        self.text_key = self.spec.get("text_key", "text")
        self.record_format = self.spec.get("record_format", "auto")
        if self.record_format not in ("auto", "text", "json"):
            raise ValueError(f"record_format must be auto|text|json, got {self.record_format!r}.")
        self.shard = (process_index, process_count)
        self._records = self._open()
        total = len(self._records)
        if total == 0:
            raise ValueError(f"{self!r} holds no records: the corpus is empty.")
        self.start = process_index * total // process_count
        self.stop = (process_index + 1) * total // process_count
        if self.stop == self.start:
            raise ValueError(f"{self!r}: fewer records ({total}) than processes.")

    def _open(self):
        if self.kind == "array_record":
            import grain

            return grain.sources.ArrayRecordDataSource(self.spec["paths"])
        import tensorflow_datasets as tfds

        try:
            return tfds.data_source(
                self.spec["name"], split=self.spec["split"], data_dir=self.spec["data_dir"]
            )
        except Exception as e:  # tfds raises DatasetNotFoundError, AssertionError, ...
            raise FileNotFoundError(
                f"cannot open tfds dataset {self.spec['name']!r} split {self.spec['split']!r} "
                f"in data_dir {self.spec['data_dir']!r}: {e}. Prepare it in array_record format "
                "first (builder.download_and_prepare(file_format='array_record'))."
            ) from e

    def _text(self, record: Any, where: str) -> str:
        if isinstance(record, dict):
            return _record_text(record, self.text_key, where)
        fmt = self.record_format
        if fmt == "auto":
            fmt = "json" if bytes(record[:1]) == b"{" else "text"
        if fmt == "json":
            try:
                record = json.loads(decode_text(record))
            except json.JSONDecodeError as e:
                raise ValueError(
                    f"{where} is not JSON ({e}); set record_format='text' for plain-text records."
                ) from e
            return _record_text(record, self.text_key, where)
        return decode_text(record)

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, index: int) -> str:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} records")
        return self._text(self._records[self.start + index], f"{self!r}[{index}]")

    def __getstate__(self):
        return {**self.__dict__, "_records": None}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._records = self._open()

    def __repr__(self) -> str:
        spec = ", ".join(f"{k}={v!r}" for k, v in sorted(self.spec.items()))
        shard = f"{self.shard[0]}/{self.shard[1]}"
        return f"RecordTextSource(kind={self.kind!r}, {spec}, shard={shard})"


TextSource = FileTextSource | RecordTextSource


def make_source(
    cfg: Any, process_index: int | None = None, process_count: int | None = None
) -> TextSource:
    """Builds this process's source from a config (see the module docstring for the fields).

    process_index/count default to `jax.process_index()`/`jax.process_count()`.
    """
    spec = dict(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg)
    if process_index is None or process_count is None:
        import jax

        process_index, process_count = jax.process_index(), jax.process_count()
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count}).")
    kind = spec.pop("kind", None)
    if kind not in KINDS:
        raise ValueError(f"unknown data source kind {kind!r}; use one of {KINDS}.")
    unknown = sorted(set(spec) - FIELDS)
    if unknown:
        raise ValueError(f"unknown data source field(s) {unknown}; known: {sorted(FIELDS)}.")
    text_key = spec.get("text_key") or "text"
    if kind == "tfds":
        if not spec.get("name"):
            raise ValueError("a tfds source needs `name` (the registered dataset name).")
        fields = {"name": spec["name"], "split": spec.get("split") or "train"}
        fields.update(data_dir=spec.get("data_dir"), text_key=text_key)
        source = RecordTextSource(kind, fields, process_index, process_count)
    elif kind == "array_record":
        fields = {"paths": expand_paths(spec.get("path") or "")}
        fields.update(text_key=text_key, record_format=spec.get("record_format") or "auto")
        source = RecordTextSource(kind, fields, process_index, process_count)
    else:
        source = FileTextSource(
            kind,
            expand_paths(spec.get("path") or ""),
            text_key=text_key,
            text_split=spec.get("text_split") or "paragraph",
            process_index=process_index,
            process_count=process_count,
        )
    source[0]  # fail now (empty corpus, bad records) rather than inside the training loop
    return source
