"""
Tokenization through tiktoken, fully offline.

The tiny from-scratch model uses a byte-level BPE: 256 single bytes (rank = byte value), a few
hundred merges learned by `train_bpe` on the task corpus, then the chat special tokens. Encoding
and decoding run in tiktoken's Rust core; this file only trains the ranks, renders chats into
(ids, mask) and saves/loads the result.

    from nanorlsp.tokenizer import build_tiny_tokenizer, load_tokenizer
    tok = build_tiny_tokenizer(corpus_texts, n_merges=400); tok.save("out/sft")
    tok = load_tokenizer("out/sft")
    ids, mask = tok.render_conversation([{"role": "user", "content": "2+3?"},
                                         {"role": "assistant", "content": "\\boxed{5}"}])

Footguns:
- `encode` never yields a special id, even for text that spells "<|endoftext|>" (untrusted text
  must not be able to end a turn); specials enter only through the chat renderer.
- Every digit is its own pre-token, so numbers are spelled digit by digit: arithmetic on "1234"
  sees 4 tokens with the same meaning at every position, not arbitrary 1-3 digit chunks.
"""

import base64
import heapq
import json
import os
from collections import Counter, defaultdict
from typing import Iterable

import regex  # tiktoken's own dependency; stdlib `re` has no \p{L} / \p{N} classes
import tiktoken

from nanorlsp.common import atomic_write

# GPT-4's (cl100k) split pattern with `\p{N}{1,3}` replaced by `\p{N}`: a digit is always a
# chunk of its own (never joined to other digits or to a space), so BPE can never merge digits.
# Letters keep an optional leading space (" the"); whitespace is split as in GPT-4.
SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|begin_of_turn|>", "<|end_of_turn|>", "<|user|>", "<|assistant|>"]

# Chat formats live in this one table: header text per role, end-of-turn text, and the text that
# opens a conversation. Header/end strings may mix specials and plain text (chatml's
# "<|im_start|>user\n"), so they are encoded with specials allowed. Only "tiny" exists for now.
CHAT_FORMATS = {
    "tiny": {
        "bos": "<|endoftext|>",
        "user": "<|begin_of_turn|><|user|>",
        "assistant": "<|begin_of_turn|><|assistant|>",
        "end": "<|end_of_turn|>",
    },
}

RANKS_FILE = "tokenizer.tiktoken"
META_FILE = "tokenizer_meta.json"
FORMAT = "nanorlsp-tiktoken"

# -----------------------------------------------------------------------------
# BPE training


def _merge(word: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every non-overlapping occurrence of `pair` in `word` (left to right) by new_id."""
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == pair[0] and word[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def train_bpe(texts: Iterable[str], n_merges: int, pattern: str = SPLIT_PATTERN) -> dict[bytes, int]:
    """Byte-level BPE: returns tiktoken mergeable ranks {token bytes: rank}.

    Ranks 0..255 are the single bytes (rank = byte value), then the learned merges in order.
    Each round merges the most frequent adjacent pair (ties: smallest (left id, right id), so
    training is deterministic); stops after n_merges new tokens or when no pair occurs twice.
    Works on unique chunks weighted by count, with pair counts updated incrementally and a lazy
    max-heap, so a round costs only the chunks that contain the merged pair.
    """
    split = regex.compile(pattern)
    chunk_counts = Counter()
    for text in texts:
        chunk_counts.update(split.findall(text))
    words = [list(chunk.encode("utf-8")) for chunk in chunk_counts]  # token ids per unique chunk
    freqs = list(chunk_counts.values())

    vocab = [bytes([i]) for i in range(256)]  # id -> bytes
    ranks = {b: i for i, b in enumerate(vocab)}  # bytes -> id
    pair_counts = Counter()  # (left id, right id) -> occurrences in the corpus
    where = defaultdict(set)  # pair -> indices of words that (may) contain it; stale entries ok
    for w, (word, f) in enumerate(zip(words, freqs)):
        for pair in zip(word, word[1:]):
            pair_counts[pair] += f
            where[pair].add(w)
    # heapq is a min-heap: store -count; an entry is stale when its count no longer matches
    heap = [(-c, pair) for pair, c in pair_counts.items()]
    heapq.heapify(heap)

    while len(vocab) < 256 + n_merges and heap:
        neg_count, pair = heapq.heappop(heap)
        if -neg_count != pair_counts.get(pair):
            continue  # stale entry, a fresher one is in the heap
        if -neg_count < 2:
            break  # nothing left worth merging
        merged = vocab[pair[0]] + vocab[pair[1]]
        # the same bytes can arise from two different pairs ("a"+"bc", "ab"+"c"): reuse the id,
        # since tiktoken keys ranks by bytes and a duplicate would silently overwrite a rank
        new_id = ranks.get(merged)
        if new_id is None:
            new_id = len(vocab)
            vocab.append(merged)
            ranks[merged] = new_id
        changed = set()
        for w in where.pop(pair):
            word, f = words[w], freqs[w]
            new_word = _merge(word, pair, new_id)
            if len(new_word) == len(word):
                continue  # stale index entry: an earlier merge already consumed the pair
            for p in zip(word, word[1:]):
                pair_counts[p] -= f
                changed.add(p)
            for p in zip(new_word, new_word[1:]):
                pair_counts[p] += f
                changed.add(p)
                where[p].add(w)
            words[w] = new_word
        for p in changed:
            if pair_counts[p] > 0:
                heapq.heappush(heap, (-pair_counts[p], p))
            else:
                del pair_counts[p]
    return ranks


# -----------------------------------------------------------------------------
# Tokenizer


class Tokenizer:
    """A tiktoken.Encoding plus the chat renderer and save/load."""

    def __init__(self, enc: tiktoken.Encoding, chat_format: str = "tiny", meta: dict | None = None):
        if chat_format not in CHAT_FORMATS:
            raise ValueError(f"unknown chat_format {chat_format!r}; known: {sorted(CHAT_FORMATS)}")
        self.enc = enc
        self.chat_format = chat_format
        self.meta = dict(meta or {})
        fmt = CHAT_FORMATS[chat_format]
        self._chat = {k: self._encode_special(v) for k, v in fmt.items()}  # key -> ids

    def _encode_special(self, text: str) -> list[int]:
        return self.enc.encode(text, allowed_special="all")

    @property
    def n_vocab(self) -> int:
        return self.enc.n_vocab

    def encode(self, text: str) -> list[int]:
        # encode_ordinary: special-token text in user data is just bytes, never a special id
        return self.enc.encode_ordinary(text)

    def decode(self, ids: list[int]) -> str:
        # a sampled sequence can end mid-UTF-8 character: replace, don't raise
        return self.enc.decode(list(ids), errors="replace")

    def decode_bytes(self, ids: list[int]) -> bytes:
        return self.enc.decode_bytes(list(ids))

    def special(self, name: str) -> int:
        try:
            return self.enc._special_tokens[name]
        except KeyError:
            raise KeyError(f"special token {name!r} not in tokenizer {self.enc.name!r}; "
                           f"it has {sorted(self.enc._special_tokens)}") from None

    @property
    def bos_id(self) -> int:
        return self.special("<|endoftext|>")

    @property
    def eot_id(self) -> int:
        return self.special("<|end_of_turn|>")

    @property
    def stop_tokens(self) -> list[int]:
        # the tokens that end an assistant turn; <|endoftext|> too, in case a model skips the eot
        return [self.eot_id, self.bos_id]

    def render_conversation(self, messages: list[dict]) -> tuple[list[int], list[int]]:
        """Chat -> (ids, mask). mask is 1 exactly on assistant content and its closing
        end-of-turn (so the model learns to stop), 0 on BOS, headers and user content."""
        ids, mask = list(self._chat["bos"]), [0] * len(self._chat["bos"])

        def add(tokens, m):
            ids.extend(tokens)
            mask.extend([m] * len(tokens))

        for i, msg in enumerate(messages):
            role, content = msg.get("role"), msg.get("content")
            if role not in ("user", "assistant"):
                raise ValueError(f"message {i}: role must be 'user' or 'assistant', got {role!r}")
            if not isinstance(content, str):
                raise ValueError(f"message {i}: content must be str, got {type(content).__name__}")
            m = int(role == "assistant")
            add(self._chat[role], 0)
            add(self.encode(content), m)
            add(self._chat["end"], m)
        return ids, mask

    def render_prompt(self, messages: list[dict]) -> list[int]:
        """Chat ending with a user message -> ids ending in the assistant header, ready for the
        sampler. A strict prefix of render_conversation(messages + [assistant reply])."""
        if not messages or messages[-1].get("role") != "user":
            raise ValueError("render_prompt needs a conversation that ends with a user message")
        ids, _ = self.render_conversation(messages)
        return ids + self._chat["assistant"]

    def save(self, dir: str) -> None:
        """Write dir/tokenizer.tiktoken (tiktoken's rank file, as Llama 3's tokenizer.model:
        one `base64(bytes) rank` line per token) and dir/tokenizer_meta.json."""
        os.makedirs(dir, exist_ok=True)
        ranks = sorted(self.enc._mergeable_ranks.items(), key=lambda kv: kv[1])
        lines = "".join(f"{base64.b64encode(b).decode()} {r}\n" for b, r in ranks)
        meta = {**self.meta, "format": FORMAT, "name": self.enc.name, "pat_str": self.enc._pat_str,
                "special_tokens": dict(self.enc._special_tokens), "chat_format": self.chat_format}
        atomic_write(os.path.join(dir, RANKS_FILE), lines)
        atomic_write(os.path.join(dir, META_FILE), json.dumps(meta, indent=2))


def build_tiny_tokenizer(corpus: Iterable[str] | None = None, n_merges: int = 0) -> Tokenizer:
    """256 byte tokens, + n_merges BPE merges learned on corpus (if given), + SPECIAL_TOKENS."""
    if corpus is not None and n_merges > 0:
        ranks = train_bpe(corpus, n_merges)
    else:
        ranks = {bytes([i]): i for i in range(256)}
    specials = {s: len(ranks) + i for i, s in enumerate(SPECIAL_TOKENS)}
    enc = tiktoken.Encoding(name="nanorlsp-tiny", pat_str=SPLIT_PATTERN,
                            mergeable_ranks=ranks, special_tokens=specials)
    return Tokenizer(enc, chat_format="tiny", meta={"n_merges": len(ranks) - 256})


# -----------------------------------------------------------------------------
# Loading


def _read_ranks(path: str) -> dict[bytes, int]:
    # Not tiktoken.load.load_tiktoken_bpe: it caches file contents under /tmp keyed by the *path*,
    # so re-saving a tokenizer to the same dir would load the stale old ranks.
    ranks = {}
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
            except Exception as e:
                raise ValueError(f"{path}:{n}: bad rank line {line[:80]!r}") from e
    if not ranks:
        raise ValueError(f"{path}: no tokens")
    return ranks


def _load_native(meta_path: str) -> Tokenizer:
    dir = os.path.dirname(meta_path)
    ranks_path = os.path.join(dir, RANKS_FILE)
    if not os.path.isfile(ranks_path):
        raise FileNotFoundError(f"{ranks_path} not found (needed beside {meta_path})")
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{meta_path}: not valid JSON ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path}: not a {FORMAT} tokenizer meta file")
    missing = [k for k in ("name", "pat_str", "special_tokens", "chat_format") if k not in meta]
    if missing:
        raise ValueError(f"{meta_path}: missing keys {missing}")
    ranks = _read_ranks(ranks_path)
    specials = {str(k): int(v) for k, v in meta["special_tokens"].items()}
    if set(specials.values()) & set(ranks.values()):
        raise ValueError(f"{meta_path}: special token ids collide with ranks in {ranks_path}")
    enc = tiktoken.Encoding(name=meta["name"], pat_str=meta["pat_str"],
                            mergeable_ranks=ranks, special_tokens=specials)
    return Tokenizer(enc, chat_format=meta["chat_format"], meta=meta)


def load_tokenizer(path: str) -> Tokenizer:
    """Load a tokenizer from a dir with tokenizer.tiktoken + tokenizer_meta.json, or from the
    meta json's path. Other formats (HF tokenizer.json, vocab.json+merges.txt, a bare tiktoken
    tokenizer.model, .gguf) get their own branch here."""
    path = os.fspath(path)
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, META_FILE)):
        return _load_native(os.path.join(path, META_FILE))
    if os.path.isfile(path) and os.path.basename(path) == META_FILE:
        return _load_native(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no tokenizer at {path}: path does not exist")
    raise FileNotFoundError(f"no tokenizer found at {path}: expected a directory with "
                            f"{RANKS_FILE} + {META_FILE}, or the path of {META_FILE}")
