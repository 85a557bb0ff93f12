"""
Tokenization through tiktoken, fully offline: our tiny BPE, and real models' byte-level BPEs.

    from nanorlsp.tokenizer import build_tiny_tokenizer, load_tokenizer
    tok = build_tiny_tokenizer(corpus_texts, n_merges=400); tok.save("out/sft")
    tok = load_tokenizer("out/sft")   # also a HF dir / tokenizer.json / vocab.json + merges.txt,
                                      # Llama 3's tokenizer.model, a .gguf; tok.save_hf(dir) back
    ids, mask = tok.render_conversation([{"role": "user", "content": "2+3?"},
                                         {"role": "assistant", "content": "\\boxed{5}"}])

The tiny model's BPE: 256 single bytes (rank = byte value), a few hundred merges learned by
`train_bpe` on the task corpus, then the chat specials; tiktoken's Rust core encodes and decodes.
Real vocabularies (HF, Llama 3, GGUF) are read into tiktoken ranks with HF's exact ids by
nanorlsp/tooling/tokenizer_hf.py; load_tokenizer here dispatches to it and builds the Tokenizer.
Footguns: `encode` never yields a special id, even for text spelling "<|endoftext|>" (HF's does:
compare with HF on text without them). Qwen2 normalizes to NFC: decode(encode(s)) == s only for
NFC text. Chats are rendered token by token (so the mask is exact); HF tokenizes the rendered
text whole, which differs where content would merge across a header (a leading newline in Qwen).
"""

import base64
import heapq
import json
import os
import unicodedata
from collections import Counter, defaultdict
from typing import Iterable

import regex  # tiktoken's own dependency; stdlib `re` has no \p{L} / \p{N} classes
import tiktoken

from nanorlsp.common import atomic_write
# Real models' tokenizer files are read (and written) in tooling/; the readers return pieces,
# never a Tokenizer, so that module never imports this one (the imports run one way).
from nanorlsp.tooling.tokenizer_hf import (TokenizerError, read_gguf, read_hf_json, read_llama3_model,
                                           read_ranks, read_vocab_merges, write_hf_tokenizer)

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
# "<|im_start|>user\n"), so they are encoded with specials allowed. Optional keys:
#   system     the system role's header (a format without it has no system role)
#   after_end  text after the end-of-turn token, never trained on (the model stops before it)
#   strip      strip whitespace around each content (Meta's llama3 ChatFormat and HF template do)
#   stop       tokens that end generation; those the tokenizer lacks are skipped
# A model's default system message (Qwen2.5's, SmolLM2's) is per tokenizer: meta["default_system"].
CHAT_FORMATS = {
    "tiny": {
        "bos": "<|endoftext|>",
        "user": "<|begin_of_turn|><|user|>",
        "assistant": "<|begin_of_turn|><|assistant|>",
        "end": "<|end_of_turn|>",
        "stop": ["<|end_of_turn|>", "<|endoftext|>"],
    },
    "llama3": {
        "bos": "<|begin_of_text|>",
        "system": "<|start_header_id|>system<|end_header_id|>\n\n",
        "user": "<|start_header_id|>user<|end_header_id|>\n\n",
        "assistant": "<|start_header_id|>assistant<|end_header_id|>\n\n",
        "end": "<|eot_id|>",
        "strip": True,
        "stop": ["<|eot_id|>", "<|end_of_text|>"],
    },
    "chatml": {  # Qwen2/2.5, SmolLM2
        "bos": "",
        "system": "<|im_start|>system\n",
        "user": "<|im_start|>user\n",
        "assistant": "<|im_start|>assistant\n",
        "end": "<|im_end|>",
        "after_end": "\n",
        "stop": ["<|im_end|>", "<|endoftext|>"],
    },
}
CHAT_TEXT_KEYS = ("bos", "system", "user", "assistant", "end", "after_end")

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
    """A tiktoken.Encoding plus the chat renderer and save/load.

    meta carries what tiktoken cannot hold, and is saved with the tokenizer: "normalize" ("NFC"
    or None), "bos_token"/"eos_token" names, "default_system" (a system message rendered when a
    chat has none), "n_vocab" (the real vocab size; ranks past it are bytes the vocab lacks) and
    "unreachable" ({id: base64 bytes} of tokens kept out of the ranks), see docs/real_weights.md.
    """

    def __init__(self, enc: tiktoken.Encoding, chat_format: str | None = "tiny", meta: dict | None = None):
        if chat_format is not None and chat_format not in CHAT_FORMATS:
            raise ValueError(f"unknown chat_format {chat_format!r}; known: {sorted(CHAT_FORMATS)}")
        self.enc = enc
        self.chat_format = chat_format
        self.meta = dict(meta or {})
        self.normalize = self.meta.get("normalize")
        self.default_system = self.meta.get("default_system")
        self._n_vocab = int(self.meta.get("n_vocab") or enc.n_vocab)
        self._has_missing_bytes = enc.max_token_value >= self._n_vocab  # ids to drop exist
        self._unreachable = {int(i): base64.b64decode(b) for i, b in self.meta.get("unreachable", {}).items()}
        fmt = CHAT_FORMATS.get(chat_format, {})
        self._chat = {k: self._encode_special(fmt[k]) for k in CHAT_TEXT_KEYS if k in fmt}  # key -> ids

    def _encode_special(self, text: str) -> list[int]:
        return self.enc.encode(text, allowed_special="all")

    @property
    def n_vocab(self) -> int:
        return self._n_vocab

    def encode(self, text: str) -> list[int]:
        if self.normalize and not unicodedata.is_normalized(self.normalize, text):
            text = unicodedata.normalize(self.normalize, text)
        # encode_ordinary: special-token text in user data is just bytes, never a special id
        ids = self.enc.encode_ordinary(text)
        if self._has_missing_bytes and ids and max(ids) >= self._n_vocab:
            ids = [i for i in ids if i < self._n_vocab]  # bytes the vocab lacks: HF drops them
        return ids

    def decode(self, ids: list[int]) -> str:
        # a sampled sequence can end mid-UTF-8 character: replace, don't raise
        if self._unreachable:
            return self.decode_bytes(ids).decode("utf-8", errors="replace")
        return self.enc.decode(list(ids), errors="replace")

    def decode_bytes(self, ids: list[int]) -> bytes:
        if self._unreachable:  # rare (docs/real_weights.md): a slower id-by-id path
            return b"".join(self._unreachable.get(i) or self.enc.decode_single_token_bytes(i) for i in ids)
        return self.enc.decode_bytes(list(ids))

    def special(self, name: str) -> int:
        try:
            return self.enc._special_tokens[name]
        except KeyError:
            raise KeyError(f"special token {name!r} not in tokenizer {self.enc.name!r}; "
                           f"it has {sorted(self.enc._special_tokens)[:20]}") from None

    @property
    def bos_id(self) -> int:
        # the file's own bos if it names one, else the chat format's opener, else <|endoftext|>
        fmt = CHAT_FORMATS.get(self.chat_format, {})
        return self.special(self.meta.get("bos_token") or fmt.get("bos") or "<|endoftext|>")

    @property
    def eot_id(self) -> int:
        """The token that ends a chat turn (the file's eos when there is no chat format)."""
        fmt = CHAT_FORMATS.get(self.chat_format, {})
        return self.special(fmt.get("end") or self.meta.get("eos_token") or "<|endoftext|>")

    @property
    def stop_tokens(self) -> list[int]:
        # the tokens that end an assistant turn; end-of-text too, in case a model skips the eot
        names = CHAT_FORMATS.get(self.chat_format, {}).get("stop") or [self.meta.get("eos_token")]
        return [self.special(n) for n in names if n in self.enc._special_tokens]

    def render_conversation(self, messages: list[dict]) -> tuple[list[int], list[int]]:
        """Chat -> (ids, mask). mask is 1 exactly on assistant content and its closing
        end-of-turn (so the model learns to stop), 0 on BOS, headers, system and user content.
        A format with a system header takes "system" messages; a tokenizer with a default system
        message renders it first when the chat does not open with one (as the HF templates do)."""
        if self.chat_format is None:
            raise ValueError(f"tokenizer {self.enc.name!r} has no chat format (none of the chat "
                             f"special tokens of {sorted(CHAT_FORMATS)} were found)")
        fmt = CHAT_FORMATS[self.chat_format]
        roles = ("system", "user", "assistant") if "system" in fmt else ("user", "assistant")
        ids, mask = list(self._chat["bos"]), [0] * len(self._chat["bos"])

        def add(tokens, m):
            ids.extend(tokens)
            mask.extend([m] * len(tokens))

        def add_turn(role, content, m):
            add(self._chat[role], 0)
            add(self.encode(content.strip() if fmt.get("strip") else content), m)
            add(self._chat["end"], m)
            add(self._chat.get("after_end", []), 0)

        if self.default_system and messages and messages[0].get("role") != "system":
            add_turn("system", self.default_system, 0)
        for i, msg in enumerate(messages):
            role, content = msg.get("role"), msg.get("content")
            if role not in roles:
                raise ValueError(f"message {i}: role must be {' or '.join(map(repr, roles))} "
                                 f"in chat format {self.chat_format!r}, got {role!r}")
            if not isinstance(content, str):
                raise ValueError(f"message {i}: content must be str, got {type(content).__name__}")
            add_turn(role, content, int(role == "assistant"))
        return ids, mask

    def render_prompt(self, messages: list[dict]) -> list[int]:
        """Chat ending with a user message -> ids ending in the assistant header, ready for the
        sampler. A strict prefix of render_conversation(messages + [assistant reply])."""
        if not messages or messages[-1].get("role") != "user":
            raise ValueError("render_prompt needs a conversation that ends with a user message")
        ids, _ = self.render_conversation(messages)
        return ids + self._chat["assistant"]

    def render_text(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        """The rendered chat as text, for eyeballing (and comparing with a HF chat template)."""
        ids = self.render_prompt(messages) if add_generation_prompt else self.render_conversation(messages)[0]
        return self.decode(ids)

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

    def save_hf(self, out_dir: str) -> None:
        """Write out_dir/tokenizer.json + tokenizer_config.json that
        transformers.AutoTokenizer.from_pretrained(out_dir) reads with our ids and chat template
        (how: nanorlsp/tooling/tokenizer_hf.py's write_hf_tokenizer)."""
        fmt = CHAT_FORMATS.get(self.chat_format, {})
        write_hf_tokenizer(out_dir, self.enc, n_vocab=self.n_vocab, unreachable=self._unreachable,
                           normalize=self.normalize, bos=self.meta.get("bos_token") or fmt.get("bos"),
                           eos=fmt.get("end") or self.meta.get("eos_token"),
                           chat_template=None if self.chat_format is None else self.chat_template())

    def chat_template(self) -> str:
        """A jinja chat template (HF's apply_chat_template) that renders our chat format."""
        fmt = CHAT_FORMATS[self.chat_format]
        q = json.dumps  # a JSON string is a valid jinja string literal (escapes included)
        roles = [r for r in ("system", "user", "assistant") if r in fmt]
        end = fmt["end"] + fmt.get("after_end", "")
        content = "message['content'] | trim" if fmt.get("strip") else "message['content']"
        t = "{% set headers = {" + ", ".join(f"{q(r)}: {q(fmt[r])}" for r in roles) + "} %}"
        t += "{{ " + q(fmt["bos"]) + " }}"
        if self.default_system:
            system = self.default_system.strip() if fmt.get("strip") else self.default_system
            t += ("{% if messages and messages[0]['role'] != 'system' %}{{ "
                  + q(fmt["system"] + system + end) + " }}{% endif %}")
        t += ("{% for message in messages %}{% if message['role'] not in headers %}"
              "{{ raise_exception('role must be one of " + ", ".join(roles) + "') }}{% endif %}"
              "{{ headers[message['role']] + " + content + " + " + q(end) + " }}{% endfor %}")
        t += "{% if add_generation_prompt %}{{ " + q(fmt["assistant"]) + " }}{% endif %}"
        return t


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


def _detect_chat_format(specials: dict[str, int]) -> str | None:
    if {"<|im_start|>", "<|im_end|>"} <= specials.keys():
        return "chatml"
    if {"<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"} <= specials.keys():
        return "llama3"
    if set(SPECIAL_TOKENS) <= specials.keys():
        return "tiny"
    return None


def _default_system(template: str | None) -> str | None:
    """The system message a chatml template writes when the chat has none, as a literal
    '<|im_start|>system\\n...<|im_end|>' (Qwen2.5's, SmolLM2's); None if it writes none."""
    if not template:
        return None
    m = regex.search(r"""<\|im_start\|>system(?:\n|\\n)([^'"{}]+?)<\|im_end\|>""", template)
    return m.group(1).replace("\\n", "\n") if m else None


# -----------------------------------------------------------------------------
# Loading


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
    ranks = read_ranks(ranks_path)
    specials = {str(k): int(v) for k, v in meta["special_tokens"].items()}
    if set(specials.values()) & set(ranks.values()):
        raise ValueError(f"{meta_path}: special token ids collide with ranks in {ranks_path}")
    enc = tiktoken.Encoding(name=meta["name"], pat_str=meta["pat_str"],
                            mergeable_ranks=ranks, special_tokens=specials)
    return Tokenizer(enc, chat_format=meta["chat_format"], meta=meta)


def _from_reader(enc: tiktoken.Encoding, meta: dict, chat_template: str | None) -> Tokenizer:
    """A Tokenizer from a reader's pieces: the chat format its specials imply and, for chatml,
    the default system message its template writes (unless the reader set one)."""
    chat_format = _detect_chat_format(enc._special_tokens)
    if chat_format == "chatml" and meta.get("default_system") is None and chat_template:
        meta["default_system"] = _default_system(chat_template)
    return Tokenizer(enc, chat_format=chat_format, meta=meta)


def load_tokenizer(path: str) -> Tokenizer:
    """Load a tokenizer from any of (first match wins in a directory):
    - our own: a dir with tokenizer.tiktoken + tokenizer_meta.json, or the meta json's path
    - Hugging Face: a dir with tokenizer.json, or with vocab.json + merges.txt (either with an
      optional tokenizer_config.json), or a tokenizer.json path
    - Llama 3: a dir with (or the path of) tokenizer.model, tiktoken's rank file
    - llama.cpp: a .gguf file, or a dir holding exactly one
    Unsupported tokenizers (SentencePiece, unknown pre-tokenizers) raise TokenizerError."""
    path = os.fspath(path)
    if os.path.isdir(path):
        def has(*names):
            return all(os.path.isfile(os.path.join(path, n)) for n in names)

        ggufs = sorted(n for n in os.listdir(path) if n.endswith(".gguf"))
        if has(META_FILE):
            return _load_native(os.path.join(path, META_FILE))
        if has("tokenizer.json"):
            return _from_reader(*read_hf_json(os.path.join(path, "tokenizer.json")))
        if has("vocab.json", "merges.txt"):
            return _from_reader(*read_vocab_merges(path))
        if has("tokenizer.model"):
            return _from_reader(*read_llama3_model(os.path.join(path, "tokenizer.model")))
        if len(ggufs) == 1:
            return _from_reader(*read_gguf(os.path.join(path, ggufs[0])))
        raise FileNotFoundError(f"no tokenizer found in {path}: expected {RANKS_FILE} + {META_FILE}, "
                                "tokenizer.json, vocab.json + merges.txt, tokenizer.model or one .gguf file")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no tokenizer at {path}: path does not exist")
    base = os.path.basename(path)
    if base == META_FILE:
        return _load_native(path)
    if base.endswith(".gguf"):
        return _from_reader(*read_gguf(path))
    if base.endswith(".json"):
        return _from_reader(*read_hf_json(path))
    if base.endswith((".model", ".tiktoken")):
        return _from_reader(*read_llama3_model(path))
    raise TokenizerError(f"{path}: unknown tokenizer file (expected {META_FILE}, tokenizer.json, "
                         "tokenizer.model or a .gguf file)")
