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
Real vocabularies become tiktoken ranks (id = rank) with ids identical to Hugging Face
`tokenizers` (tests/test_tokenizer_hf.py); how, and the fix-ups: docs/real_weights.md.
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


class TokenizerError(ValueError):
    """A tokenizer file we cannot read, or cannot reproduce exactly in tiktoken."""


# GPT-4's (cl100k) split pattern with `\p{N}{1,3}` replaced by `\p{N}`: a digit is always a
# chunk of its own (never joined to other digits or to a space), so BPE can never merge digits.
# Letters keep an optional leading space (" the"); whitespace is split as in GPT-4.
SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)

# Real models' split patterns, as their tokenizer.json / Meta's reference code write them.
# Llama 3 = GPT-4's cl100k: numbers in chunks of up to 3 digits.
LLAMA3_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"""
                  r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
# Qwen2 / 2.5 / 3: Llama 3's with every digit on its own (and NFC normalization before it)
QWEN2_PATTERN = LLAMA3_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")
# GPT-2: what HF's ByteLevel(use_regex=True) pre-tokenizer splits with
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# SmolLM2 / StarCoder: HF first cuts out every digit (Digits(individual_digits=True)), then runs
# GPT-2's regex on the text between digits. As one regex: a digit alone; " ?\p{N}+" can no longer
# match; and a digit ends the text before it, so "\s+(?!\S)" becomes "\s+(?![^\s\p{N}])"
# ("a  1" -> "a", "  ", "1", where GPT-2's own regex would give "a", " ", " 1").
SMOLLM_PATTERN = (r"""\p{N}|'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?[^\s\p{L}\p{N}]+"""
                  r"""|\s+(?![^\s\p{N}])|\s+""")

# name -> (split pattern, unicode normalization applied before it)
PRETOKENIZERS = {
    "llama3": (LLAMA3_PATTERN, None),
    "qwen2": (QWEN2_PATTERN, "NFC"),
    "gpt2": (GPT2_PATTERN, None),
    "smollm": (SMOLLM_PATTERN, None),
}
# llama.cpp's `tokenizer.ggml.pre` names (llama-vocab.cpp) -> ours
GGUF_PRETOKENIZERS = {"llama-bpe": "llama3", "llama3": "llama3", "qwen2": "qwen2",
                      "deepseek-r1-qwen": "qwen2", "gpt-2": "gpt2", "smollm": "smollm",
                      "starcoder": "smollm"}

# Llama 3's tokenizer.model holds only the 128,000 ranks; Meta's reference code (llama3
# tokenizer.py) appends 256 specials: <|begin_of_text|> = 128000 ... <|eot_id|> = 128009.
# (Llama 3.1 renamed some reserved ones, e.g. 128008 <|eom_id|>; a tokenizer_config.json beside the
# file overrides these names.)
LLAMA3_SPECIALS = (["<|begin_of_text|>", "<|end_of_text|>"]
                   + [f"<|reserved_special_token_{i}|>" for i in range(4)]
                   + ["<|start_header_id|>", "<|end_header_id|>", "<|reserved_special_token_4|>",
                      "<|eot_id|>"]
                   + [f"<|reserved_special_token_{i}|>" for i in range(5, 251)])

# Qwen2/2.5/3 share one BPE of 151,643 tokens; a bare vocab.json + merges.txt dir holds no added
# tokens, so a dir with exactly that vocab gets Qwen2.5's, from id 151643 on.
QWEN2_N_VOCAB = 151643
QWEN2_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
                  "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>",
                  "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
                  "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
                  "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
                  "<|repo_name|>", "<|file_sep|>"]
QWEN25_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

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
        """Write out_dir/tokenizer.json + tokenizer_config.json, so that
        transformers.AutoTokenizer.from_pretrained(out_dir) encodes as we do: a byte-level BPE
        with vocab = our ranks, merges recovered from them (merges_from_ranks), our split regex
        (Split + ByteLevel(use_regex=False)), our specials as added tokens, and a jinja chat
        template that renders what render_conversation does."""
        spell = _bytes_to_unicode()
        real = {b: r for b, r in self.enc._mergeable_ranks.items() if r < self.n_vocab}
        vocab = {"".join(spell[x] for x in b): r for b, r in real.items()}
        vocab.update({"".join(spell[x] for x in b): i for i, b in self._unreachable.items()})
        # added tokens go in the vocab too: `tokenizers` renumbers one that is not in it (from
        # the vocab's size on), which would move SmolLM2's <|im_start|> (id 1)
        clash = vocab.keys() & self.enc._special_tokens.keys()
        if clash:
            raise TokenizerError(f"special tokens {sorted(clash)[:5]} spell regular tokens too; "
                                 "a tokenizer.json vocab cannot hold both")
        vocab.update(self.enc._special_tokens)
        merges = [" ".join("".join(spell[x] for x in part) for part in pair)
                  for pair in merges_from_ranks(real)]
        added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                  "normalized": False, "special": True}
                 for s, i in sorted(self.enc._special_tokens.items(), key=lambda kv: kv[1])]
        tokenizer_json = {
            "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
            "normalizer": {"type": self.normalize} if self.normalize else None,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": self.enc._pat_str}, "behavior": "Isolated",
                 "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
            "post_processor": None,  # add no BOS: our encode adds nothing, the template writes it
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                        "use_regex": True},
            # ignore_merges: look a whole pre-token up first, as tiktoken does. Not when tokens are
            # kept unreachable: the source BPE did not look up (that is why they are unreachable)
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                      "ignore_merges": not self._unreachable, "vocab": vocab, "merges": merges},
        }
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
                  "model_max_length": 1 << 30}
        fmt = CHAT_FORMATS.get(self.chat_format, {})
        names = {"bos_token": self.meta.get("bos_token") or fmt.get("bos"),
                 "eos_token": fmt.get("end") or self.meta.get("eos_token")}
        config.update({k: v for k, v in names.items() if v in self.enc._special_tokens})
        if self.chat_format is not None:
            config["chat_template"] = self.chat_template()
        atomic_write(os.path.join(out_dir, "tokenizer.json"), json.dumps(tokenizer_json, ensure_ascii=False))
        atomic_write(os.path.join(out_dir, "tokenizer_config.json"), json.dumps(config, indent=2))

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


# -----------------------------------------------------------------------------
# Byte-level BPE: HF vocab/merges <-> tiktoken ranks


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map, in which byte-level BPE vocabs are spelled:
    printable Latin-1 bytes stand for themselves, the other 68 take chr(256), chr(257), ...
    in byte order (so the space byte 0x20 is "Ġ" = chr(288) and "\\n" is "Ċ")."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    out, n = {}, 0
    for b in range(256):
        if b in printable:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + n)
            n += 1
    return out


# str.translate table from that alphabet back to latin-1 characters (= the bytes); characters
# below 256 that are not in the alphabet (a raw space) become U+FFFF, which latin-1 rejects
_UNSPELL = str.maketrans({**{chr(b): "\uffff" for b in range(256)},
                          **{c: chr(b) for b, c in _bytes_to_unicode().items()}})


def _token_bytes(token: str, source: str) -> bytes:
    try:
        return token.translate(_UNSPELL).encode("latin-1")
    except UnicodeEncodeError:
        raise TokenizerError(f"{source}: token {token!r} is not spelled in GPT-2's byte alphabet: not a "
                             "byte-level BPE (SentencePiece-style vocabularies are not supported)") from None


def _bpe_below(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    """tiktoken's merge loop in Python, allowed only ranks < max_rank: the pieces tiktoken has
    made of `token` just before it would join them into `token` itself."""
    parts = [token[i:i + 1] for i in range(len(token))]
    while len(parts) > 1:
        best, at = max_rank, -1
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1], max_rank)
            if r < best:  # strict: the leftmost of equal ranks wins, as in tiktoken
                best, at = r, i
        if at < 0:
            break
        parts[at:at + 2] = [parts[at] + parts[at + 1]]
    return parts


def merges_from_ranks(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """HF merges that replay tiktoken's ranks: for each multi-byte token in rank order, the two
    pieces tiktoken joins to make it (the standard tiktoken -> HF conversion). A token tiktoken
    only makes by whole-piece lookup gets no merge (HF's ignore_merges covers it)."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) > 1:
            parts = _bpe_below(ranks, token, rank)
            if len(parts) == 2:
                merges.append((parts[0], parts[1]))
    return merges


def _from_hf_bpe(vocab: dict[str, int], merges: list, added: dict[str, int], *, pretokenizer: tuple,
                 ignore_merges: bool, source: str, name: str, bos: str | None = None,
                 eos: str | None = None, chat_template: str | None = None,
                 default_system: str | None = None) -> Tokenizer:
    """A HF byte-level BPE (vocab token -> id, merges as "a b" or [a, b], added token -> id) as a
    tiktoken Tokenizer with the same ids. Checks what tiktoken needs (docs/real_weights.md)."""
    pat_str, normalize = pretokenizer
    specials = dict(added)  # every added token, special or not: never produced by encode
    spelled = {t: _token_bytes(t, source) for t in vocab if t not in specials}
    ranks = {spelled[t]: int(i) for t, i in vocab.items() if t in spelled}
    if not ranks or len(ranks) != len(spelled):
        raise TokenizerError(f"{source}: {'empty vocab' if not ranks else 'two vocab tokens spell the same bytes'}")
    clash = set(ranks.values()) & set(specials.values())
    if clash:
        raise TokenizerError(f"{source}: ids {sorted(clash)[:5]} are both a vocab token and an added token")

    # Replay the merges: each must make a vocab token from two, at a rank >= every earlier
    # merge's (tiktoken's priority is the rank). Many merges may make one token (Llama 3's
    # tokenizer.json lists every split of a token); they then sit together, at equal rank.
    pairs, last = [], -1
    for k, merge in enumerate(merges):
        a, b = merge.split(" ") if isinstance(merge, str) else merge
        if a not in spelled or b not in spelled or spelled[a] + spelled[b] not in ranks:
            raise TokenizerError(f"{source}: merge {k} {a!r} {b!r} uses or makes a token not in the vocab")
        pairs.append((spelled[a], spelled[b]))
        if ranks[spelled[a] + spelled[b]] < last:
            raise TokenizerError(f"{source}: merge {k} {a!r} {b!r} makes id {ranks[spelled[a] + spelled[b]]} "
                                 f"after an earlier merge made id {last}; tiktoken merges by id, so it "
                                 "cannot replay this BPE")
        last = ranks[spelled[a] + spelled[b]]
    # A token no chain of merges makes from bytes: HF never outputs it, unless it looks whole
    # pre-tokens up first (ignore_merges, as tiktoken always does). Keep it out of the ranks,
    # decodable on the side. (Passes until nothing changes: a merge may use a later one's token.)
    reachable, grew = {t for t in ranks if len(t) == 1}, True
    while grew and not ignore_merges:
        n = len(reachable)
        reachable.update(x + y for x, y in pairs if x in reachable and y in reachable)
        grew = len(reachable) > n
    unreachable = {} if ignore_merges else {ranks.pop(t): t for t in list(ranks) if t not in reachable}
    # Bytes the vocab lacks: ids past the vocab, dropped by Tokenizer.encode as HF drops them.
    n_vocab = max([*ranks.values(), *specials.values(), *unreachable]) + 1
    missing = [bytes([x]) for x in range(256) if bytes([x]) not in ranks]
    ranks.update({b: n_vocab + k for k, b in enumerate(missing)})

    try:
        enc = tiktoken.Encoding(name=name, pat_str=pat_str, mergeable_ranks=ranks, special_tokens=specials)
    except ValueError as e:  # an Oniguruma regex that tiktoken's fancy-regex cannot compile
        raise TokenizerError(f"{source}: tiktoken cannot use the split regex {pat_str!r}: {e}") from None
    chat_format = _detect_chat_format(specials)
    if chat_format == "chatml" and default_system is None:
        default_system = _default_system(chat_template)
    meta = {"source": source, "normalize": normalize, "bos_token": bos, "eos_token": eos,
            "default_system": default_system, "n_vocab": n_vocab,
            "unreachable": {str(i): base64.b64encode(t).decode() for i, t in unreachable.items()}}
    return Tokenizer(enc, chat_format=chat_format, meta=meta)


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
# Reading Hugging Face, Llama 3 and GGUF tokenizer files


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise TokenizerError(f"{path}: not valid JSON ({e})") from None


def _hf_config(dir: str) -> dict:
    """bos/eos names, added tokens and chat template from dir/tokenizer_config.json (and
    chat_template.jinja), all optional."""
    path = os.path.join(dir, "tokenizer_config.json")
    cfg = _read_json(path) if os.path.isfile(path) else {}

    def name(v):  # "<s>" or {"content": "<s>", ...}
        return v.get("content") if isinstance(v, dict) else v

    template = cfg.get("chat_template")
    if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    jinja = os.path.join(dir, "chat_template.jinja")
    if os.path.isfile(jinja):
        with open(jinja, encoding="utf-8") as f:
            template = f.read()
    added = {v["content"]: int(k) for k, v in (cfg.get("added_tokens_decoder") or {}).items()}
    return {"bos": name(cfg.get("bos_token")), "eos": name(cfg.get("eos_token")), "added": added,
            "chat_template": template, "class": cfg.get("tokenizer_class")}


def _pretokenizer_from_json(tj: dict, source: str) -> tuple[str, str | None]:
    """(split pattern, normalization) from tokenizer.json's pre_tokenizer and normalizer. Handles
    the byte-level shapes real models use: Split(regex) + ByteLevel(use_regex=False) (Llama 3,
    Qwen2), ByteLevel(use_regex=True) (GPT-2), Digits + ByteLevel(use_regex=True) (SmolLM2)."""
    pre, norm = tj.get("pre_tokenizer"), tj.get("normalizer")
    steps = pre.get("pretokenizers") if pre and pre.get("type") == "Sequence" else [pre]
    steps = [s or {} for s in steps or [None]]
    first, last = steps[0] if len(steps) == 2 else {}, steps[-1]
    # the last step maps bytes to GPT-2's alphabet (no prefix space); whether it also splits with
    # GPT-2's regex (use_regex) tells the shapes apart
    byte_level = (last.get("type") == "ByteLevel" and not last.get("add_prefix_space"))
    byte_regex = last.get("use_regex", True)

    pattern = None
    if (byte_level and not byte_regex and first.get("type") == "Split" and "Regex" in first.get("pattern", {})
            and first.get("behavior") == "Isolated" and not first.get("invert")):
        pattern = first["pattern"]["Regex"]
    elif byte_level and byte_regex and len(steps) == 1:
        pattern = GPT2_PATTERN
    elif byte_level and byte_regex and first.get("type") == "Digits" and first.get("individual_digits"):
        pattern = SMOLLM_PATTERN
    if pattern is None:
        raise TokenizerError(f"{source}: unsupported pre_tokenizer {json.dumps(pre)[:300]} (supported: "
                             "Split(regex)+ByteLevel, ByteLevel, Digits+ByteLevel)")
    norms = norm.get("normalizers", []) if norm and norm.get("type") == "Sequence" else [norm] if norm else []
    if [n.get("type") for n in norms] not in ([], ["NFC"]):
        raise TokenizerError(f"{source}: unsupported normalizer {json.dumps(norm)[:200]} "
                             "(supported: none, NFC)")
    return pattern, "NFC" if norms else None


def _load_hf_json(path: str) -> Tokenizer:
    tj = _read_json(path)
    model = tj.get("model") if isinstance(tj, dict) else None
    if not isinstance(model, dict) or model.get("type") != "BPE":
        kind = model.get("type") if isinstance(model, dict) else None
        raise TokenizerError(f"{path}: model type {kind!r} is not supported (only byte-level BPE; "
                             "Unigram/SentencePiece and WordPiece tokenizers are not)")
    if any(model.get(k) for k in ("byte_fallback", "continuing_subword_prefix", "end_of_word_suffix")):
        raise TokenizerError(f"{path}: SentencePiece-style BPE (byte_fallback / subword affixes) "
                             "is not supported")
    cfg = _hf_config(os.path.dirname(path))
    added = {t["content"]: int(t["id"]) for t in tj.get("added_tokens") or []}
    return _from_hf_bpe(model.get("vocab") or {}, model.get("merges") or [], {**cfg["added"], **added},
                        pretokenizer=_pretokenizer_from_json(tj, path),
                        ignore_merges=bool(model.get("ignore_merges")), source=path,
                        name=os.path.basename(os.path.dirname(os.path.abspath(path))),
                        bos=cfg["bos"], eos=cfg["eos"], chat_template=cfg["chat_template"])


def _load_vocab_merges(dir: str) -> Tokenizer:
    """vocab.json + merges.txt (GPT-2's original format). The files do not say how to split
    text: tokenizer_config.json's tokenizer_class does, or a vocabulary we recognize (Qwen2's)."""
    vocab = _read_json(os.path.join(dir, "vocab.json"))
    with open(os.path.join(dir, "merges.txt"), encoding="utf-8") as f:
        # "#version: 0.2" header line, if present, is not a merge; HF skips it too
        merges = [line.rstrip("\r\n") for line in f if line.strip() and not line.startswith("#version")]
    cfg = _hf_config(dir)
    added, default_system = cfg["added"], None
    if cfg["class"] in ("Qwen2Tokenizer", "Qwen2TokenizerFast"):
        pre = "qwen2"
    elif cfg["class"] in ("GPT2Tokenizer", "GPT2TokenizerFast"):
        pre = "gpt2"
    elif cfg["class"] is None and len(vocab) == QWEN2_N_VOCAB and merges[:1] == ["Ġ Ġ"]:
        pre = "qwen2"  # Qwen2/2.5/3's BPE without its config: Qwen2.5's specials and system
        added = {s: QWEN2_N_VOCAB + i for i, s in enumerate(QWEN2_SPECIALS)}
        cfg["eos"], default_system = "<|im_end|>", QWEN25_SYSTEM
    else:
        raise TokenizerError(f"{dir}: cannot tell how to pre-tokenize vocab.json + merges.txt "
                             f"(tokenizer_class {cfg['class']!r}; supported: Qwen2Tokenizer, "
                             "GPT2Tokenizer); add a tokenizer.json")
    return _from_hf_bpe(vocab, merges, added, pretokenizer=PRETOKENIZERS[pre], ignore_merges=False,
                        source=dir, name=os.path.basename(os.path.abspath(dir)), bos=cfg["bos"],
                        eos=cfg["eos"], chat_template=cfg["chat_template"], default_system=default_system)


def _load_tiktoken_model(path: str) -> Tokenizer:
    """A Llama 3 tokenizer.model: tiktoken ranks as `base64(bytes) rank` lines, then the 256
    specials (or those a tokenizer_config.json beside it names) from the next id on."""
    try:
        ranks = _read_ranks(path)
    except ValueError as e:
        raise TokenizerError(f"{path}: not a tiktoken rank file (SentencePiece tokenizer.model files "
                             f"are not supported): {e}") from None
    cfg = _hf_config(os.path.dirname(path))
    n = max(ranks.values()) + 1
    specials = cfg["added"] or {s: n + i for i, s in enumerate(LLAMA3_SPECIALS)}
    enc = tiktoken.Encoding(name=os.path.basename(os.path.dirname(os.path.abspath(path))) or "llama3",
                            pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks, special_tokens=specials)
    meta = {"source": path, "bos_token": cfg["bos"] or "<|begin_of_text|>", "eos_token": cfg["eos"]}
    return Tokenizer(enc, chat_format=_detect_chat_format(specials), meta=meta)


def _load_gguf(path: str) -> Tokenizer:
    """The tokenizer in a llama.cpp GGUF's metadata: tokenizer.ggml.{model, pre, tokens,
    token_type, merges, bos_token_id, eos_token_id} and tokenizer.chat_template."""
    try:
        import gguf  # optional: only GGUF files need it
    except ImportError:
        raise TokenizerError(f"{path}: reading .gguf files needs the `gguf` package "
                             "(pip install gguf)") from None
    try:
        fields = gguf.GGUFReader(path).fields  # memory-maps the file; reads metadata only
    except Exception as e:
        raise TokenizerError(f"{path}: not a readable GGUF file ({e})") from None

    def get(key, default=None):
        return fields[key].contents() if key in fields else default

    model, pre = get("tokenizer.ggml.model"), get("tokenizer.ggml.pre", "default")
    if model != "gpt2":
        raise TokenizerError(f"{path}: tokenizer.ggml.model {model!r} is not supported (only 'gpt2', "
                             "byte-level BPE; 'llama' is SentencePiece)")
    if pre not in GGUF_PRETOKENIZERS:
        raise TokenizerError(f"{path}: tokenizer.ggml.pre {pre!r} is not supported "
                             f"(supported: {sorted(GGUF_PRETOKENIZERS)})")
    tokens = get("tokenizer.ggml.tokens") or []
    types = get("tokenizer.ggml.token_type") or [1] * len(tokens)
    # llama.cpp token types: 1 normal, 3 control (<|im_end|>), 4 user-defined (an added token)
    vocab = {t: i for i, (t, ty) in enumerate(zip(tokens, types)) if ty not in (3, 4)}
    added = {t: i for i, (t, ty) in enumerate(zip(tokens, types)) if ty in (3, 4)}
    bos, eos = get("tokenizer.ggml.bos_token_id"), get("tokenizer.ggml.eos_token_id")
    pre = GGUF_PRETOKENIZERS[pre]
    return _from_hf_bpe(vocab, get("tokenizer.ggml.merges") or [], added, pretokenizer=PRETOKENIZERS[pre],
                        ignore_merges=pre == "llama3",  # llama.cpp, like HF's Llama 3, looks words up first
                        source=path, name=os.path.splitext(os.path.basename(path))[0],
                        bos=None if bos is None else tokens[bos], eos=None if eos is None else tokens[eos],
                        chat_template=get("tokenizer.chat_template"))


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
            return _load_hf_json(os.path.join(path, "tokenizer.json"))
        if has("vocab.json", "merges.txt"):
            return _load_vocab_merges(path)
        if has("tokenizer.model"):
            return _load_tiktoken_model(os.path.join(path, "tokenizer.model"))
        if len(ggufs) == 1:
            return _load_gguf(os.path.join(path, ggufs[0]))
        raise FileNotFoundError(f"no tokenizer found in {path}: expected {RANKS_FILE} + {META_FILE}, "
                                "tokenizer.json, vocab.json + merges.txt, tokenizer.model or one .gguf file")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no tokenizer at {path}: path does not exist")
    base = os.path.basename(path)
    if base == META_FILE:
        return _load_native(path)
    if base.endswith(".gguf"):
        return _load_gguf(path)
    if base.endswith(".json"):
        return _load_hf_json(path)
    if base.endswith((".model", ".tiktoken")):
        return _load_tiktoken_model(path)
    raise TokenizerError(f"{path}: unknown tokenizer file (expected {META_FILE}, tokenizer.json, "
                         "tokenizer.model or a .gguf file)")
