"""Tokenizers: our RWKV World tokenizer against BlinkDL's reference, HF wrapping, load_tokenizer.

Offline and CPU-only. The reference `TRIE_TOKENIZER` takes ~4 s to build over the full
vocabulary, so we build it over the lines whose tokens occur in the test texts (plus every
single byte). That is exact: greedy longest-match over a text only ever reaches tokens that
are substrings of that text, so the dropped lines cannot change any id it gives.
"""
from __future__ import annotations

import ast
import pickle
import random
import sys
import time

import pytest

from archbench.harness.errors import ArchbenchError, MissingDependencyError
from archbench.models.tokenizer import (
    WORLD_VOCAB_FILE,
    HFTokenizer,
    RWKVWorldTokenizer,
    Tokenizer,
    load_tokenizer,
    packaged_world_vocab,
)

rwkv_tokenizer = pytest.importorskip("rwkv.rwkv_tokenizer", reason="needs `pip install rwkv`")


# ---- texts --------------------------------------------------------------------------
def _random_unicode(rng: random.Random, n: int) -> str:
    ranges = [(0x20, 0x7F), (0x00, 0x20), (0xA0, 0x250), (0x300, 0x370), (0x370, 0x530),
              (0x600, 0x700), (0x900, 0x980), (0x3040, 0x3100), (0x4E00, 0x9FFF), (0xAC00, 0xD7A4),
              (0x1F300, 0x1FAFF), (0xE000, 0xF900), (0x10000, 0x10FFFF)]
    out = []
    for _ in range(n):
        lo, hi = rng.choice(ranges)
        cp = rng.randrange(lo, hi)
        if 0xD800 <= cp < 0xE000:  # lone surrogates have no UTF-8 form
            cp = 0xFFFD
        out.append(chr(cp))
    return "".join(out)


_rng = random.Random(20230424)
TEXTS = {
    "empty": "",
    "ascii_prose": ("The quick brown fox jumps over the lazy dog. It's 3:45pm -- isn't it? "
                    "\"Quoted\", (parenthesised) and [bracketed] words; 1,234.56% growth!\n\n"
                    "A second paragraph, with  double  spaces and trailing space. "),
    "code": ("def forward(self, x, state=None):\n\t\"\"\"Docstring.\"\"\"\n\tfor i in range(10):\n"
             "\t\tif x[i] != 0:\n\t\t\treturn {'a': [1, 2, 3], \"b\": (4.0e-3,)}\n"
             "    mixed    indentation\t\t\n\r\n#include <stdio.h>\nint main(){printf(\"%d\\n\",42);}\n"
             + " " * 150 + "x = 1  # long run of spaces\n" + "-" * 90 + "\n" + "#" * 81),
    "chinese": "我们今天讨论语言模型的基准测试，包括速度、内存和准确率。RWKV是一种循环神经网络。",
    "japanese": "吾輩は猫である。名前はまだ無い。カタカナとひらがな、そして漢字が混ざった文章です。",
    "korean_arabic_hindi": "안녕하세요 세계. مرحبا بالعالم. नमस्ते दुनिया।",
    "emoji": "🙂👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️‍🔥 🇺🇳 text🚀between🎉emoji",
    "combining": "e\u0301 a\u0300\u0316 Z\u0351\u0352\u0353\u0354\u0355 \u1e9b\u0323 n\u0303o\u0308 "
                 "\u0915\u094d\u0937 \u05e9\u05c1\u05b8",
    "control": "".join(chr(i) for i in range(32)) + "\x7f\x80\x9f\u200b\u200d\ufeff\u2028\u2029",
    "nul_runs": "\x00" * 7 + "a\x00b" + "\x1b[31mred\x1b[0m",
    **{f"random_{i}": _random_unicode(_rng, 60 + 40 * i) for i in range(12)},
}
RAW_BYTES = {
    "all_bytes": bytes(range(256)),
    "invalid_utf8": b"\xff\xfe\xe4\xb8 \xc3\x28 \xa0\xa1 \xf0\x28\x8c\x28 ok \xe6\x88\x91",
    "truncated_char": "我们".encode("utf-8")[:-1],
    "random_bytes": bytes(random.Random(7).randrange(256) for _ in range(3000)),
}


def _vocab_lines():
    """(id, token bytes) of every line of the packaged vocabulary, parsed by ast.literal_eval."""
    out = []
    with open(packaged_world_vocab(), encoding="utf-8") as f:
        for line in f:
            idx, rest = line.rstrip("\n").split(" ", 1)
            literal, length = rest.rsplit(" ", 1)
            value = ast.literal_eval(literal)
            token = value.encode("utf-8") if isinstance(value, str) else value
            assert len(token) == int(length)
            out.append((int(idx), token, line))
    return out


@pytest.fixture(scope="module")
def world() -> RWKVWorldTokenizer:
    return RWKVWorldTokenizer()


@pytest.fixture(scope="module")
def vocab_lines():
    return _vocab_lines()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, vocab_lines):
    """BlinkDL's TRIE_TOKENIZER over the vocabulary lines the test inputs can reach."""
    corpus = b"\x00".join([t.encode("utf-8") for t in TEXTS.values()] + list(RAW_BYTES.values()))
    path = tmp_path_factory.mktemp("vocab") / "filtered_vocab.txt"
    with open(path, "w", encoding="utf-8") as f:
        for _idx, token, line in vocab_lines:
            if len(token) == 1 or token in corpus:
                f.write(line)
    return rwkv_tokenizer.TRIE_TOKENIZER(str(path))


# ---- RWKV World: against the reference ------------------------------------------------
@pytest.mark.parametrize("name", list(TEXTS))
def test_world_matches_reference_and_round_trips(world, reference, name):
    text = TEXTS[name]
    ids = world.encode(text)
    assert ids == reference.encode(text)
    assert world.decode(ids) == text
    assert all(0 < i < world.vocab_size for i in ids)


@pytest.mark.parametrize("name", list(RAW_BYTES))
def test_world_bytes_match_reference(world, reference, name):
    data = RAW_BYTES[name]
    ids = world.encode_bytes(data)
    assert ids == reference.encodeBytes(data)
    assert world.decode_bytes(ids) == data
    assert world.decode(ids) == data.decode("utf-8", errors="replace")


def test_world_vocabulary_table_matches_literal_eval(world, vocab_lines):
    assert len(vocab_lines) == 65529
    table = world._id_to_bytes
    assert len(table) == 65536
    assert table[0] == b"" and all(t == b"" for t in table[65530:])
    for idx, token, _line in vocab_lines:
        assert table[idx] == token, idx


def test_every_token_encodes_to_itself(world):
    table = world._id_to_bytes
    for idx in range(1, 65530):
        assert world.encode_bytes(table[idx]) == [idx], (idx, table[idx])


def test_world_attributes_and_decode_edges(world):
    assert isinstance(world, Tokenizer)
    assert world.vocab_size == len(world) == 65536
    assert world.eos_token_id == 0 and world.bos_token_id is None
    assert world.name == "rwkv-world"
    assert world.encode("") == [] and world.decode([]) == ""
    assert world.decode([0]) == "" and world.decode_bytes([65535]) == b""
    one = world.encode("我")
    assert len(one) == 1
    # a partial character decodes with a replacement character, never an exception
    half = world.encode_bytes("我".encode("utf-8")[:2])
    assert world.decode(half) == "\ufffd"
    # tensors, tuples, generators and a single int are all accepted
    torch = pytest.importorskip("torch")
    ids = world.encode("hello world")
    assert world.decode(torch.tensor(ids)) == world.decode(tuple(ids)) == world.decode(iter(ids)) == "hello world"
    assert world.decode(ids[0]) == world.decode(ids[:1])
    with pytest.raises(ValueError, match="65536"):
        world.decode([65536])
    with pytest.raises(ValueError, match="-1"):
        world.decode([5, -1])
    copy = pickle.loads(pickle.dumps(world))  # data-loader workers get a copy
    assert copy.encode(TEXTS["emoji"]) == world.encode(TEXTS["emoji"])


def test_world_encode_speed(world):
    text = (TEXTS["ascii_prose"] + TEXTS["code"] + TEXTS["chinese"]) * 200  # ~200 KB
    world.encode("warm up")  # builds the trie
    start = time.perf_counter()
    ids = world.encode(text)
    elapsed = time.perf_counter() - start
    assert world.decode(ids) == text
    assert elapsed < 3.0, f"{len(text.encode()) / 1e3:.0f} KB took {elapsed:.2f} s"


# ---- RWKV World: vocabulary files ------------------------------------------------------
def _copy_vocab(tmp_path, edit=None):
    lines = packaged_world_vocab().read_text(encoding="utf-8").split("\n")
    if edit:
        edit(lines)
    path = tmp_path / WORLD_VOCAB_FILE
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def test_world_explicit_vocab_file(tmp_path, world):
    tok = RWKVWorldTokenizer(vocab_file=_copy_vocab(tmp_path))
    text = TEXTS["code"] + TEXTS["japanese"]
    assert tok.encode(text) == world.encode(text)


@pytest.mark.parametrize("line, problem", [
    ("300 'ab' 3", "is 2 bytes, the line says 3"),
    ("300 __import__('os').system('true') 4", "malformed"),
    ("300 [1, 2] 2", "not str or bytes"),
    ("70000 'zz' 2", "outside"),
    ("2 'zz' 2", "appears twice"),
])
def test_world_bad_vocab_lines(tmp_path, line, problem):
    def edit(lines):
        lines[299] = line  # the line for id 300

    path = _copy_vocab(tmp_path, edit)
    with pytest.raises(ArchbenchError, match=problem) as info:
        RWKVWorldTokenizer(vocab_file=path)
    assert str(path) in str(info.value)


def test_world_missing_rwkv_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "rwkv", None)  # `import rwkv` now fails
    with pytest.raises(MissingDependencyError, match="pip install rwkv"):
        RWKVWorldTokenizer()


def test_world_missing_vocab_file(tmp_path):
    with pytest.raises(ArchbenchError, match="does not exist"):
        RWKVWorldTokenizer(vocab_file=tmp_path / "nope.txt")


# ---- Hugging Face ----------------------------------------------------------------------
HF_TEXTS = ["", "hello world", "Hello, World!  double  spaces\n\tand tabs\n",
            TEXTS["chinese"], TEXTS["emoji"], TEXTS["combining"], TEXTS["random_3"]]


def _train_bpe():
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    corpus = [TEXTS["ascii_prose"], TEXTS["code"], TEXTS["chinese"]] * 20
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("tiny-bpe")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=_train_bpe(),
                                                eos_token="<|endoftext|>", bos_token="<s>")
    fast.save_pretrained(folder)
    return folder


def test_hf_round_trip(hf_folder):
    tok = HFTokenizer(hf_folder)
    assert isinstance(tok, Tokenizer)
    assert tok.name == hf_folder.name
    assert tok.eos_token_id == 0 and tok.bos_token_id == 1
    assert tok.vocab_size == len(tok) == len(tok.tokenizer) >= 256
    for text in HF_TEXTS:
        ids = tok.encode(text)
        assert tok.eos_token_id not in ids and tok.bos_token_id not in ids
        assert tok.decode(ids) == text
        assert tok.encode_bytes(text.encode("utf-8")) == ids
        assert tok.decode_bytes(ids) == text.encode("utf-8")
    long_text = TEXTS["ascii_prose"] * 100
    assert tok.decode(tok.encode(long_text)) == long_text


def test_load_tokenizer_hf_folder_and_checkpoint_beside(hf_folder):
    tok = load_tokenizer(hf_folder)
    assert isinstance(tok, HFTokenizer)
    (hf_folder / "model.pth").write_bytes(b"")  # never read: only its folder matters
    tok = load_tokenizer(str(hf_folder / "model.pth"))
    assert isinstance(tok, HFTokenizer) and tok.decode(tok.encode("hello world")) == "hello world"


def test_load_tokenizer_bare_tokenizer_json(tmp_path):
    pytest.importorskip("transformers")
    _train_bpe().save(str(tmp_path / "tokenizer.json"))  # no tokenizer_config.json beside it
    for spec in (tmp_path, tmp_path / "tokenizer.json"):
        tok = load_tokenizer(spec)
        assert isinstance(tok, HFTokenizer) and tok.name == tmp_path.name
        assert tok.decode(tok.encode(TEXTS["code"])) == TEXTS["code"]


# ---- load_tokenizer ----------------------------------------------------------------------
def test_load_tokenizer_world_specs(tmp_path):
    tok = load_tokenizer("rwkv-world")
    assert isinstance(tok, RWKVWorldTokenizer) and load_tokenizer("RWKV_World") is tok
    (tmp_path / "RWKV-x070-World-0.1B.pth").write_bytes(b"")
    assert load_tokenizer(tmp_path / "RWKV-x070-World-0.1B.pth") is tok  # nothing beside it
    _copy_vocab(tmp_path)  # an HF RWKV World repo ships the vocabulary file
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "Rwkv5Tokenizer"}')
    beside = load_tokenizer(tmp_path)
    assert isinstance(beside, RWKVWorldTokenizer) and beside.encode("hi there") == tok.encode("hi there")


def test_load_tokenizer_missing_path(tmp_path):
    missing = tmp_path / "no-such-checkpoint"
    with pytest.raises(ArchbenchError) as info:
        load_tokenizer(missing)
    message = str(info.value)
    assert str(missing) in message and "no such file or folder" in message
    assert "tokenizer.json" in message and "rwkv-world" in message


def test_load_tokenizer_folder_without_tokenizer(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ArchbenchError) as info:
        load_tokenizer(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message
    for looked_for in ("tokenizer.json", "tokenizer_config.json", WORLD_VOCAB_FILE):
        assert looked_for in message


def test_load_tokenizer_safetensors_without_tokenizer(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ArchbenchError, match="no tokenizer beside this checkpoint") as info:
        load_tokenizer(tmp_path / "model.safetensors")
    assert "tokenizer.json" in str(info.value)


def test_load_tokenizer_unknown_file(tmp_path):
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(ArchbenchError, match="not a tokenizer spec") as info:
        load_tokenizer(tmp_path / "data.csv")
    assert "data.csv" in str(info.value)


def test_hf_tokenizer_bad_folder(tmp_path):
    pytest.importorskip("transformers")
    (tmp_path / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(ArchbenchError) as info:
        load_tokenizer(tmp_path)
    assert str(tmp_path) in str(info.value)
