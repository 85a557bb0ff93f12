"""
Tests for nanorlsp/tokenizer.py: round trips, digit splitting, special-token safety, chat masks,
save/load and BPE training. Hermetic (the corpus is generated here) and fast.

    python -m pytest tests/test_tokenizer.py -q
"""

import json
import os
import random

import pytest
import regex

from nanorlsp.tokenizer import (SPECIAL_TOKENS, SPLIT_PATTERN, Tokenizer, build_tiny_tokenizer,
                                load_tokenizer, train_bpe)

WORDS = ["the", "answer", "is", "let", "us", "think", "step", "wait", "so", "we", "add", "carry",
         "check", "therefore", "number", "sum", "hmm", "again", "verify", "café", "数学", "ok"]


def make_corpus(n_lines=3000, seed=0):
    # digit-heavy arithmetic chatter, with some non-ASCII letters and Arabic-Indic digits
    rng = random.Random(seed)
    vocab = WORDS + ["".join(rng.choice("etaoinshrdlu") for _ in range(rng.randint(2, 7))) for _ in range(300)]
    lines = []
    for _ in range(n_lines):
        a, b = rng.randint(0, 99999), rng.randint(0, 99999)
        words = " ".join(rng.choice(vocab) for _ in range(8))
        lines.append(f"{words}: {a} + {b} = {a + b}. \\boxed{{{a + b}}} ٣٤٥  {a}{b}\n")
    return lines


@pytest.fixture(scope="module")
def corpus():
    return make_corpus()


@pytest.fixture(scope="module")
def base_tok():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def bpe_tok(corpus):
    return build_tiny_tokenizer(corpus, n_merges=300)


@pytest.fixture(params=["base", "bpe"])
def tok(request, base_tok, bpe_tok):
    return base_tok if request.param == "base" else bpe_tok


def random_strings(n=200, seed=0):
    rng = random.Random(seed)
    pools = [
        "abc xyz THE the 0123456789 +-=*/()[]{}\\$.,;:!?'\"",
        "\r\n\t \x00\x0b\x0c",
        "日本語中文한국어😀👍🏽🇫🇷é\u0301n\u0303\u200d",
    ]
    out = []
    for _ in range(n):
        k = rng.randint(0, 40)
        s = "".join(rng.choice(rng.choice(pools)) for _ in range(k))
        # plus some arbitrary code points (surrogates excluded: not encodable as UTF-8)
        s += "".join(chr(rng.choice([rng.randint(0x20, 0xD7FF), rng.randint(0xE000, 0x10FFFF)]))
                     for _ in range(rng.randint(0, 5)))
        out.append(s)
    return out


# -----------------------------------------------------------------------------
# encode / decode


def test_round_trip_unicode(tok):
    fixed = ["", "hello world", "emoji 😀👍🏽🇫🇷", "CJK 日本語 中文", "combining e\u0301 a\u0308",
             "crlf\r\nline\ttab", "nul\x00byte", "  leading and trailing  ", "\n\n\n", "<|user|>"]
    for s in fixed + random_strings():
        assert tok.decode(tok.encode(s)) == s, repr(s)


def test_decode_partial_utf8_replaces(base_tok):
    ids = base_tok.encode("é")  # two byte tokens
    assert len(ids) == 2
    assert base_tok.decode(ids[:1]) == "\ufffd"
    assert base_tok.decode_bytes(ids) == "é".encode()


def test_digits_are_single_tokens(tok):
    s = "12345 + 67890 = 80235"
    ids = tok.encode(s)
    for ch in "1234567890":
        assert [ch.encode()] == [tok.enc.decode_single_token_bytes(i) for i in tok.encode(ch)]
    digit_tokens = [i for i in ids if any(c in b"0123456789" for c in tok.enc.decode_single_token_bytes(i))]
    assert len(digit_tokens) == sum(c.isdigit() for c in s)


def test_no_learned_token_holds_two_digits(bpe_tok):
    assert bpe_tok.meta["n_merges"] > 100  # the corpus really was trained on
    for b in bpe_tok.enc._mergeable_ranks:
        if any(c in b"0123456789" for c in b):
            assert len(b) == 1, b  # an ASCII digit never merges, not even with a space
        assert sum(ch.isdigit() for ch in b.decode("utf-8", errors="ignore")) <= 1, b


def test_tiktoken_split_matches_python_regex(bpe_tok, corpus):
    # tiktoken splits in Rust (fancy-regex), training in Python (regex): they must agree, or the
    # learned merges would not match the chunks seen at encode time
    text = "".join(corpus[:50]) + "".join(random_strings(50, seed=1))
    chunks = regex.findall(SPLIT_PATTERN, text)
    assert "".join(chunks) == text
    assert bpe_tok.encode(text) == [i for c in chunks for i in bpe_tok.encode(c)]


def test_specials_never_from_plain_text(tok):
    special_ids = {tok.special(s) for s in SPECIAL_TOKENS}
    text = "<|endoftext|><|user|>" + "".join(SPECIAL_TOKENS) + " <|assistant|>hi<|end_of_turn|>"
    ids = tok.encode(text)
    assert not special_ids & set(ids)
    assert tok.decode(ids) == text


def test_special_ids(tok):
    n_ranks = len(tok.enc._mergeable_ranks)
    assert [tok.special(s) for s in SPECIAL_TOKENS] == list(range(n_ranks, n_ranks + len(SPECIAL_TOKENS)))
    assert tok.n_vocab == n_ranks + len(SPECIAL_TOKENS)
    assert tok.bos_id == tok.special("<|endoftext|>")
    assert tok.eot_id == tok.special("<|end_of_turn|>")
    assert tok.stop_tokens == [tok.eot_id, tok.bos_id]
    with pytest.raises(KeyError, match="<|im_start|>"):
        tok.special("<|im_start|>")


# -----------------------------------------------------------------------------
# chat rendering

CHAT = [
    {"role": "user", "content": "What is 12 + 30?"},
    {"role": "assistant", "content": "12 + 30 = 42. \\boxed{42}"},
    {"role": "user", "content": "And 1 + 1?"},
    {"role": "assistant", "content": "Wait, 1 + 1 = 2. \\boxed{2}"},
]


def test_render_conversation_layout(tok):
    ids, mask = tok.render_conversation(CHAT[:2])
    sp = tok.special
    bot, eot = sp("<|begin_of_turn|>"), sp("<|end_of_turn|>")
    expected = ([sp("<|endoftext|>"), bot, sp("<|user|>")] + tok.encode(CHAT[0]["content"]) + [eot]
                + [bot, sp("<|assistant|>")] + tok.encode(CHAT[1]["content"]) + [eot])
    assert ids == expected
    assert tok.decode(ids) == ("<|endoftext|><|begin_of_turn|><|user|>What is 12 + 30?<|end_of_turn|>"
                               "<|begin_of_turn|><|assistant|>12 + 30 = 42. \\boxed{42}<|end_of_turn|>")


def test_render_conversation_mask(tok):
    ids, mask = tok.render_conversation(CHAT)
    assert len(ids) == len(mask) and set(mask) <= {0, 1}
    masked = [i for i, m in zip(ids, mask) if m]
    assert tok.decode(masked) == "".join(m["content"] + "<|end_of_turn|>" for m in CHAT if m["role"] == "assistant")
    unmasked = tok.decode([i for i, m in zip(ids, mask) if not m])
    for m in CHAT:
        if m["role"] == "user":
            assert m["content"] in unmasked
    assert mask[0] == 0 and mask[-1] == 1 and ids[-1] == tok.eot_id


def test_render_prompt_is_prefix(tok):
    for k in (1, 3):
        prompt = tok.render_prompt(CHAT[:k])
        full, mask = tok.render_conversation(CHAT[:k + 1])
        assert len(prompt) < len(full) and full[:len(prompt)] == prompt
        assert prompt[-2:] == [tok.special("<|begin_of_turn|>"), tok.special("<|assistant|>")]
        assert mask[:len(prompt)] == tok.render_conversation(CHAT[:k])[1] + [0, 0]  # header unmasked
        assert all(m == 1 for m in mask[len(prompt):])  # the reply and its eot: all trained on


def test_render_rejects_bad_messages(tok):
    with pytest.raises(ValueError, match="role"):
        tok.render_conversation([{"role": "system", "content": "x"}])
    with pytest.raises(ValueError, match="content"):
        tok.render_conversation([{"role": "user", "content": 5}])
    with pytest.raises(ValueError, match="user message"):
        tok.render_prompt(CHAT[:2])
    with pytest.raises(ValueError, match="chat_format"):
        Tokenizer(tok.enc, chat_format="nope")


# -----------------------------------------------------------------------------
# BPE training


def test_bpe_deterministic_and_compresses(corpus, bpe_tok):
    r1 = train_bpe(corpus, 300)
    assert r1 == train_bpe(list(corpus), 300)
    assert list(r1.items()) == list(train_bpe(corpus, 300).items())  # same order too
    assert r1 == bpe_tok.enc._mergeable_ranks
    text = "".join(corpus[:200])
    assert len(bpe_tok.encode(text)) < 0.7 * len(text.encode())


def test_bpe_ranks_structure(bpe_tok):
    ranks = bpe_tok.enc._mergeable_ranks
    assert sorted(ranks.values()) == list(range(len(ranks)))
    for i in range(256):
        assert ranks[bytes([i])] == i
    for b, r in ranks.items():
        if r >= 256:
            # every merged token is two earlier tokens joined
            assert any(ranks.get(b[:k], r) < r and ranks.get(b[k:], r) < r for k in range(1, len(b))), b


def test_bpe_stops_early():
    ranks = train_bpe(["ab ab", "xyz"], 50)
    assert ranks[b"ab"] == 256 and len(ranks) <= 258  # only pairs seen twice get merged
    assert len(train_bpe([], 10)) == 256


# -----------------------------------------------------------------------------
# save / load


def test_save_load_round_trip(tmp_path, tok, corpus):
    d = tmp_path / "tok"
    tok.save(str(d))  # creates the dir
    assert sorted(os.listdir(d)) == ["tokenizer.tiktoken", "tokenizer_meta.json"]
    meta = json.loads((d / "tokenizer_meta.json").read_text())
    assert meta["format"] == "nanorlsp-tiktoken" and meta["chat_format"] == "tiny"
    assert meta["special_tokens"] == {s: tok.special(s) for s in SPECIAL_TOKENS}
    first = (d / "tokenizer.tiktoken").read_text().splitlines()[0]
    assert first == "AA== 0"  # base64(b"\x00") rank 0
    for loaded in (load_tokenizer(str(d)), load_tokenizer(str(d / "tokenizer_meta.json"))):
        text = "".join(corpus[:100]) + "".join(random_strings(30))
        assert loaded.encode(text) == tok.encode(text)
        assert [loaded.special(s) for s in SPECIAL_TOKENS] == [tok.special(s) for s in SPECIAL_TOKENS]
        assert loaded.n_vocab == tok.n_vocab
        assert loaded.render_conversation(CHAT) == tok.render_conversation(CHAT)


def test_resave_same_dir_is_not_stale(tmp_path, base_tok, bpe_tok):
    # re-saving a different tokenizer to the same dir must load the new one (no path-keyed cache)
    base_tok.save(str(tmp_path))
    assert load_tokenizer(str(tmp_path)).n_vocab == base_tok.n_vocab
    bpe_tok.save(str(tmp_path))
    assert load_tokenizer(str(tmp_path)).n_vocab == bpe_tok.n_vocab


def test_load_errors(tmp_path, base_tok):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_tokenizer(str(tmp_path))  # empty dir
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tokenizer(str(tmp_path / "missing"))
    base_tok.save(str(tmp_path))
    meta = tmp_path / "tokenizer_meta.json"
    ranks = tmp_path / "tokenizer.tiktoken"
    good_meta, good_ranks = meta.read_text(), ranks.read_text()
    meta.write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer_meta.json"):
        load_tokenizer(str(tmp_path))
    meta.write_text(json.dumps({"format": "nanorlsp-tiktoken"}))
    with pytest.raises(ValueError, match="missing keys"):
        load_tokenizer(str(tmp_path))
    meta.write_text(good_meta)
    ranks.write_text(good_ranks + "%%% not base64\n")
    with pytest.raises(ValueError, match="tokenizer.tiktoken:257"):
        load_tokenizer(str(tmp_path))
    ranks.unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer.tiktoken"):
        load_tokenizer(str(tmp_path))
