"""Tokenizers: the RWKV World tokenizer (our own implementation) and Hugging Face ones.

    tok = load_tokenizer("rwkv-world")              # RWKV World, 65,536 ids
    tok = load_tokenizer("checkpoints/pythia-160m")  # a folder with tokenizer.json
    tok = load_tokenizer("RWKV-x070-World-1.5B.pth") # World, unless a tokenizer sits beside it
    ids = tok.encode("Hello world")                  # no special tokens added
    text = tok.decode(ids)

Every tokenizer here has the same surface: `encode(text) -> list[int]`, `decode(ids) -> str`,
`encode_bytes(data) -> list[int]`, `decode_bytes(ids) -> bytes`, and the attributes
`vocab_size`, `eos_token_id`, `bos_token_id` and `name`.

The RWKV World tokenizer is greedy longest-match over UTF-8 bytes: at each position take
the longest vocabulary entry that is a prefix of the remaining bytes. Its vocabulary
(`rwkv_vocab_v20230424.txt`) ships in BlinkDL's `rwkv` wheel; the ids we produce are
exactly those of that package's `TRIE_TOKENIZER` (the tests check this).
"""
from __future__ import annotations

import ast
import functools
import os
import threading
from pathlib import Path
from typing import Any, Iterable, Protocol, runtime_checkable

from archbench.harness.errors import ArchbenchError, MissingDependencyError

__all__ = [
    "Tokenizer",
    "RWKVWorldTokenizer",
    "HFTokenizer",
    "ByteTokenizer",
    "load_tokenizer",
    "WORLD_VOCAB_FILE",
    "WORLD_SPECS",
]

WORLD_VOCAB_FILE = "rwkv_vocab_v20230424.txt"
WORLD_SPECS = ("rwkv-world", "rwkv_world")  # spec strings that mean the RWKV World tokenizer
HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
RAW_TOKENIZER_FILES = ("20B_tokenizer.json",)  # plain `tokenizers` files (RWKV-4 Pile .pth models)
NATIVE_CHECKPOINT_SUFFIXES = (".pth", ".pt")  # BlinkDL checkpoints: World unless told otherwise
OTHER_CHECKPOINT_SUFFIXES = (".bin", ".safetensors")  # HF / fla folders: tokenizer must sit beside
_LOOKED_FOR = ", ".join((*HF_TOKENIZER_FILES, WORLD_VOCAB_FILE, *RAW_TOKENIZER_FILES))


@runtime_checkable
class Tokenizer(Protocol):
    """What every archbench tokenizer offers."""

    name: str
    vocab_size: int
    eos_token_id: int | None
    bos_token_id: int | None

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def encode_bytes(self, data: bytes) -> list[int]: ...

    def decode_bytes(self, ids: Iterable[int]) -> bytes: ...


def _as_id_list(ids: Any) -> list[int]:
    """ids as a plain list: accepts an int, any iterable of ints, a tensor or an array."""
    if hasattr(ids, "tolist"):  # torch.Tensor, numpy array (a 0-d one gives a scalar)
        ids = ids.tolist()
    if isinstance(ids, int):
        return [ids]
    return ids if isinstance(ids, list) else list(ids)


# ---- RWKV World ---------------------------------------------------------------------
def packaged_world_vocab() -> Path:
    """Path of `rwkv_vocab_v20230424.txt` inside the installed `rwkv` package."""
    import importlib.resources

    hint = f"pip install rwkv (or pass vocab_file=... pointing at {WORLD_VOCAB_FILE})"
    try:
        root = importlib.resources.files("rwkv")
    except ModuleNotFoundError:
        raise MissingDependencyError(
            f"the RWKV World tokenizer needs its vocabulary {WORLD_VOCAB_FILE}, which ships in "
            f"BlinkDL's `rwkv` package, and `rwkv` is not installed: {hint}") from None
    entry = root / WORLD_VOCAB_FILE
    if not entry.is_file():
        raise MissingDependencyError(
            f"the installed `rwkv` package ({root}) has no {WORLD_VOCAB_FILE}: "
            f"pip install rwkv==0.8.32 (or pass vocab_file=...)")
    return Path(str(entry))  # wheels install as plain files, so this is a real path


def _literal_token(literal: str) -> bytes:
    """One vocabulary entry from its Python literal with `ast.literal_eval` (never eval)."""
    value = ast.literal_eval(literal)
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    raise ValueError(f"{literal[:40]} is a {type(value).__name__}, not str or bytes")


def read_world_vocab(path: str | os.PathLike, vocab_size: int = 65536) -> list[bytes]:
    """The table id -> token bytes (length `vocab_size`) from an RWKV vocabulary file.

    Each line is `id <python str or bytes literal> <byte length>`. Ids absent from the
    file (0, the end-of-text token, and any padding ids at the end) map to b"". A malformed
    file raises ArchbenchError naming the file and line."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ArchbenchError(f"cannot read RWKV vocabulary {path}: {e}") from None
    table: list[bytes] = [b""] * vocab_size
    for lineno, line in enumerate(text.split("\n"), 1):
        try:
            first, last = line.index(" "), line.rindex(" ")
            literal = line[first + 1:last]
            if (literal[:1] == "'" and literal[-1] == "'" and literal.count("'") == 2
                    and "\\" not in literal):  # plain 'text': its own content, no parsing needed
                token = literal[1:-1].encode("utf-8")
            else:
                token = _literal_token(literal)
            idx = int(line[:first])
            length = int(line[last + 1:])
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
            if not line.strip():
                continue
            raise ArchbenchError(f"{path}:{lineno}: malformed vocabulary line ({e}): {line[:80]!r}") from None
        if len(token) != length or not token or not 0 < idx < vocab_size or table[idx]:
            _reject(path, lineno, idx, token, length, vocab_size)
        table[idx] = token
    tokens = [t for t in table if t]
    present = set(tokens)
    if len(present) != len(tokens):
        seen: dict[bytes, int] = {}
        for idx, token in enumerate(table):
            if token and token in seen:
                raise ArchbenchError(f"{path}: token {token!r} appears twice (ids {seen[token]} and {idx})")
            seen[token] = idx
    missing = [b for b in range(256) if bytes((b,)) not in present]
    if missing:
        raise ArchbenchError(f"{path}: no single-byte token for byte(s) {missing[:8]}"
                             f"{' ...' if len(missing) > 8 else ''}; every byte needs one so "
                             f"that any input can be encoded")
    return table


def _reject(path, lineno, idx, token, length, vocab_size):
    if len(token) != length:
        raise ArchbenchError(f"{path}:{lineno}: token {token!r} is {len(token)} bytes, the line says {length}")
    if not token:
        raise ArchbenchError(f"{path}:{lineno}: id {idx} has an empty token")
    if not 0 < idx < vocab_size:
        raise ArchbenchError(f"{path}:{lineno}: id {idx} is outside 1..{vocab_size - 1} "
                             f"(id 0 is reserved for <|endoftext|>)")
    raise ArchbenchError(f"{path}:{lineno}: id {idx} appears twice")


_VALUE = 256  # key under which a trie node (a dict keyed by byte 0..255) keeps its token id


class RWKVWorldTokenizer:
    """The RWKV World tokenizer: greedy longest-match over UTF-8 bytes, 65,536 ids.

    Id 0 is `<|endoftext|>` (eos); there is no bos. Ids that name no token (0 and the
    unused ids above the last vocabulary entry) decode to nothing. The vocabulary table is
    read at construction; the byte trie the encoder walks is built on first encode."""

    vocab_size = 65536
    eos_token_id = 0
    bos_token_id = None
    eos_token = "<|endoftext|>"
    bos_token = None

    def __init__(self, vocab_file: str | os.PathLike | None = None):
        self.vocab_file = Path(vocab_file) if vocab_file is not None else packaged_world_vocab()
        if not self.vocab_file.is_file():
            raise ArchbenchError(f"RWKV vocabulary file {self.vocab_file} does not exist")
        self.name = ("rwkv-world" if self.vocab_file.name == WORLD_VOCAB_FILE
                     else f"rwkv-world({self.vocab_file.name})")
        self._id_to_bytes = read_world_vocab(self.vocab_file, self.vocab_size)
        self._trie: dict | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RWKVWorldTokenizer(vocab_file={str(self.vocab_file)!r})"

    def __len__(self) -> int:
        return self.vocab_size

    def __getstate__(self) -> dict:  # picklable (data-loader workers): no lock, no trie
        state = self.__dict__.copy()
        del state["_lock"]
        state["_trie"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- the trie: nested dicts {byte: child, _VALUE: token id} ------------------------
    def _get_trie(self) -> dict:
        trie = self._trie
        if trie is None:
            with self._lock:
                if self._trie is None:
                    self._trie = self._build_trie()
                trie = self._trie
        return trie

    def _build_trie(self) -> dict:
        root: dict = {}
        for idx, token in enumerate(self._id_to_bytes):
            if not token:
                continue
            node = root
            for byte in token:
                child = node.get(byte)
                if child is None:
                    child = node[byte] = {}
                node = child
            node[_VALUE] = idx
        return root

    # -- encoding -----------------------------------------------------------------------
    def encode_bytes(self, data: bytes | bytearray | memoryview) -> list[int]:
        """Token ids of raw bytes: at each position, the longest token that matches."""
        data = bytes(data)
        root = self._get_trie()
        out: list[int] = []
        append = out.append
        value_key = _VALUE  # a local: the loop below runs once per byte
        n = len(data)
        i = 0
        while i < n:
            node = root
            j = i
            best = -1
            end = i
            while j < n:
                node = node.get(data[j])
                if node is None:
                    break
                j += 1
                tid = node.get(value_key)
                if tid is not None:
                    best = tid
                    end = j
            # every single byte is a token (checked when the vocabulary was read)
            append(best)
            i = end
        return out

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (UTF-8 encoded). No special tokens are added."""
        return self.encode_bytes(text.encode("utf-8"))

    # -- decoding -----------------------------------------------------------------------
    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes the ids stand for. Ids outside 0..vocab_size-1 raise ValueError."""
        ids = _as_id_list(ids)
        if not ids:
            return b""
        lo, hi = min(ids), max(ids)
        if lo < 0 or hi >= self.vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"token id {bad} is outside 0..{self.vocab_size - 1} ({self.name})")
        table = self._id_to_bytes
        return b"".join([table[i] for i in ids])

    def decode(self, ids: Iterable[int]) -> str:
        """Text of the ids; bytes that are not valid UTF-8 (a character split across a
        partial token) come out as U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def id_to_bytes(self, idx: int) -> bytes:
        """The bytes of one token (b"" for ids that name no token, such as eos)."""
        return self.decode_bytes([idx])


# ---- Hugging Face -------------------------------------------------------------------
def _transformers():
    try:
        import transformers
    except ImportError:
        raise MissingDependencyError(
            "Hugging Face tokenizers need `transformers`: pip install transformers tokenizers") from None
    return transformers


class HFTokenizer:
    """A Hugging Face tokenizer read from a local folder (never downloaded), with the same
    surface as RWKVWorldTokenizer. `encode` adds no special tokens unless asked."""

    def __init__(self, folder: str | os.PathLike, *, trust_remote_code: bool = False,
                 tokenizer: Any = None, name: str | None = None):
        self.path = Path(folder)
        if tokenizer is None:
            transformers = _transformers()
            if not self.path.is_dir():
                raise ArchbenchError(f"{self.path}: not a folder (looked for a Hugging Face "
                                     f"tokenizer: {', '.join(HF_TOKENIZER_FILES)})")
            try:
                tokenizer = transformers.AutoTokenizer.from_pretrained(
                    str(self.path), local_files_only=True, trust_remote_code=trust_remote_code)
            except Exception as e:  # transformers raises many kinds; give one clear message
                raise ArchbenchError(f"{self.path}: cannot load a Hugging Face tokenizer "
                                     f"({type(e).__name__}: {e})") from e
        self.tokenizer = tokenizer
        self.name = name or self.path.name or str(self.path)

    @classmethod
    def from_tokenizer_file(cls, path: str | os.PathLike) -> "HFTokenizer":
        """Wrap a bare `tokenizers` JSON file (no tokenizer_config.json beside it)."""
        transformers = _transformers()
        path = Path(path)
        try:
            tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path))
        except Exception as e:
            raise ArchbenchError(f"{path}: cannot load as a `tokenizers` file "
                                 f"({type(e).__name__}: {e})") from e
        name = path.parent.name if path.name == "tokenizer.json" and path.parent.name else path.stem
        return cls(path, tokenizer=tok, name=name)

    def __repr__(self) -> str:
        return f"HFTokenizer({str(self.path)!r}, {type(self.tokenizer).__name__})"

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def vocab_size(self) -> int:
        """Every id the tokenizer can produce, added tokens included."""
        return len(self.tokenizer)

    @property
    def eos_token_id(self) -> int | None:
        return self.tokenizer.eos_token_id

    @property
    def bos_token_id(self) -> int | None:
        return self.tokenizer.bos_token_id

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        # verbose=False: no "longer than the model's maximum length" warning on long texts
        return list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens, verbose=False))

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self.tokenizer.decode(_as_id_list(ids), skip_special_tokens=skip_special_tokens,
                                     clean_up_tokenization_spaces=False)

    def encode_bytes(self, data: bytes | bytearray | memoryview, add_special_tokens: bool = False) -> list[int]:
        """Ids of UTF-8 bytes (invalid UTF-8 raises UnicodeDecodeError: this tokenizer works on text)."""
        return self.encode(bytes(data).decode("utf-8"), add_special_tokens=add_special_tokens)

    def decode_bytes(self, ids: Iterable[int], skip_special_tokens: bool = False) -> bytes:
        return self.decode(ids, skip_special_tokens=skip_special_tokens).encode("utf-8")


# ---- picking one --------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _packaged_world() -> RWKVWorldTokenizer:
    return RWKVWorldTokenizer()


def _from_folder(folder: Path, trust_remote_code: bool):
    """The tokenizer a folder holds, or None when it holds none we know."""
    if (folder / WORLD_VOCAB_FILE).is_file():  # HF RWKV World repos ship this beside remote code
        return RWKVWorldTokenizer(folder / WORLD_VOCAB_FILE)
    if any((folder / f).is_file() for f in HF_TOKENIZER_FILES):
        try:
            return HFTokenizer(folder, trust_remote_code=trust_remote_code)
        except ArchbenchError:
            if (folder / "tokenizer.json").is_file():  # e.g. no tokenizer_config.json/config.json
                return HFTokenizer.from_tokenizer_file(folder / "tokenizer.json")
            raise
    for f in RAW_TOKENIZER_FILES:
        if (folder / f).is_file():
            return HFTokenizer.from_tokenizer_file(folder / f)
    return None


class ByteTokenizer:
    """UTF-8 bytes as ids 1-256 and 0 as end of text: for the tiny random-weight presets
    (vocabulary 512), so suites run end to end with no vocabulary file."""

    name = "bytes"
    vocab_size = 257
    eos_token_id = 0
    bos_token_id = None

    def encode(self, text: str) -> list[int]:
        return self.encode_bytes(text.encode("utf-8"))

    def encode_bytes(self, data: bytes) -> list[int]:
        return [b + 1 for b in data]

    def decode_bytes(self, ids) -> bytes:
        return bytes(int(i) - 1 for i in ids if 0 < int(i) <= 256)

    def decode(self, ids) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")


def load_tokenizer(spec: str | os.PathLike, *, trust_remote_code: bool = False):
    """A tokenizer from a spec:

    - "rwkv-world": the RWKV World tokenizer from the `rwkv` package's vocabulary;
    - "bytes": UTF-8 bytes (ids 1-256; for tiny presets);
    - a folder: rwkv_vocab_v20230424.txt in it gives the World tokenizer, else
      tokenizer.json / tokenizer_config.json give a Hugging Face tokenizer;
    - a .pth/.pt checkpoint: the tokenizer in its folder if one sits beside it, else World;
    - a .safetensors/.bin checkpoint: the tokenizer in its folder (which must have one);
    - a tokenizer.json file or an RWKV vocabulary .txt file: that tokenizer.

    Nothing is downloaded. A path that does not exist or holds no tokenizer raises
    ArchbenchError naming the path and what was looked for."""
    if isinstance(spec, str) and spec.strip().lower() in WORLD_SPECS:
        return _packaged_world()
    if isinstance(spec, str) and spec.strip().lower() == "bytes":
        return ByteTokenizer()
    path = Path(spec).expanduser()
    if path.is_dir():
        tok = _from_folder(path, trust_remote_code)
        if tok is None:
            raise ArchbenchError(f"{path}: no tokenizer in this folder (looked for {_LOOKED_FOR})")
        return tok
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in NATIVE_CHECKPOINT_SUFFIXES:
            tok = _from_folder(path.parent, trust_remote_code)
            return tok if tok is not None else _packaged_world()
        if suffix in OTHER_CHECKPOINT_SUFFIXES:
            tok = _from_folder(path.parent, trust_remote_code)
            if tok is None:
                raise ArchbenchError(f"{path}: no tokenizer beside this checkpoint in {path.parent} "
                                     f"(looked for {_LOOKED_FOR})")
            return tok
        if path.name == "tokenizer_config.json":
            return HFTokenizer(path.parent, trust_remote_code=trust_remote_code)
        if suffix == ".json":
            return HFTokenizer.from_tokenizer_file(path)
        if suffix == ".txt":
            return RWKVWorldTokenizer(path)
        raise ArchbenchError(f"{path}: not a tokenizer spec; expected 'rwkv-world', a folder with "
                             f"{_LOOKED_FOR}, a checkpoint ({', '.join(NATIVE_CHECKPOINT_SUFFIXES + OTHER_CHECKPOINT_SUFFIXES)}), "
                             f"a tokenizer .json or an RWKV vocabulary .txt")
    raise ArchbenchError(f"tokenizer {str(spec)!r}: no such file or folder {path} (expected "
                         f"'rwkv-world', a checkpoint folder with {_LOOKED_FOR}, or a .pth checkpoint; "
                         f"nothing is downloaded)")
