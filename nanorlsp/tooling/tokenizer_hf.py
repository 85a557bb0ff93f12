"""
Real tokenizer files in and out: Hugging Face (tokenizer.json; vocab.json + merges.txt), Llama 3's
tokenizer.model and llama.cpp GGUF metadata read into tiktoken ranks, and a tokenizer written back
as a Hugging Face tokenizer.json. nanorlsp/tokenizer.py's load_tokenizer dispatches here.

    from nanorlsp.tokenizer import load_tokenizer
    tok = load_tokenizer("path/to/SmolLM2-135M-Instruct")   # or a tokenizer.json / .gguf path
    tok.save_hf("out/hf")                                   # AutoTokenizer loads it, same ids

Each reader returns the pieces (tiktoken.Encoding, meta, chat template) and tokenizer.py builds
the Tokenizer, so this module never imports tokenizer.py (the imports run one way).
Real vocabularies become tiktoken ranks (id = rank) with ids identical to Hugging Face
`tokenizers`; the merges must be replayable by rank, and tokens no merge chain reaches are kept
out of the ranks (decodable on the side). How, and the fix-ups: docs/real_weights.md.
Footguns: only byte-level BPE (no SentencePiece / Unigram / WordPiece); a vocab.json + merges.txt
dir does not say how to split text, so it needs tokenizer_config.json's tokenizer_class (or
Qwen2's exact vocabulary).
"""

import base64
import json
import os

import tiktoken

from nanorlsp.common import atomic_write


class TokenizerError(ValueError):
    """A tokenizer file we cannot read, or cannot reproduce exactly in tiktoken."""


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
                 default_system: str | None = None) -> tuple[tiktoken.Encoding, dict, str | None]:
    """A HF byte-level BPE (vocab token -> id, merges as "a b" or [a, b], added token -> id) as a
    tiktoken Encoding with the same ids, its meta and the chat template. Checks what tiktoken
    needs (docs/real_weights.md)."""
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
    meta = {"source": source, "normalize": normalize, "bos_token": bos, "eos_token": eos,
            "default_system": default_system, "n_vocab": n_vocab,
            "unreachable": {str(i): base64.b64encode(t).decode() for i, t in unreachable.items()}}
    return enc, meta, chat_template  # tokenizer.py fills a chatml default_system from the template


# -----------------------------------------------------------------------------
# Writing a Hugging Face tokenizer.json


def write_hf_tokenizer(out_dir: str, enc: tiktoken.Encoding, *, n_vocab: int, unreachable: dict[int, bytes],
                       normalize: str | None, bos: str | None, eos: str | None,
                       chat_template: str | None) -> None:
    """Write out_dir/tokenizer.json + tokenizer_config.json, so that
    transformers.AutoTokenizer.from_pretrained(out_dir) encodes as `enc` does: a byte-level BPE
    with vocab = our ranks (those < n_vocab, plus the unreachable tokens), merges recovered from
    them (merges_from_ranks), our split regex (Split + ByteLevel(use_regex=False)), our specials
    as added tokens, bos/eos names (when they are specials) and the jinja chat template."""
    spell = _bytes_to_unicode()
    real = {b: r for b, r in enc._mergeable_ranks.items() if r < n_vocab}
    vocab = {"".join(spell[x] for x in b): r for b, r in real.items()}
    vocab.update({"".join(spell[x] for x in b): i for i, b in unreachable.items()})
    # added tokens go in the vocab too: `tokenizers` renumbers one that is not in it (from
    # the vocab's size on), which would move SmolLM2's <|im_start|> (id 1)
    clash = vocab.keys() & enc._special_tokens.keys()
    if clash:
        raise TokenizerError(f"special tokens {sorted(clash)[:5]} spell regular tokens too; "
                             "a tokenizer.json vocab cannot hold both")
    vocab.update(enc._special_tokens)
    merges = [" ".join("".join(spell[x] for x in part) for part in pair)
              for pair in merges_from_ranks(real)]
    added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True}
             for s, i in sorted(enc._special_tokens.items(), key=lambda kv: kv[1])]
    tokenizer_json = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": normalize} if normalize else None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": enc._pat_str}, "behavior": "Isolated",
             "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": None,  # add no BOS: our encode adds nothing, the template writes it
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        # ignore_merges: look a whole pre-token up first, as tiktoken does. Not when tokens are
        # kept unreachable: the source BPE did not look up (that is why they are unreachable)
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": not unreachable, "vocab": vocab, "merges": merges},
    }
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
              "model_max_length": 1 << 30}
    names = {"bos_token": bos, "eos_token": eos}
    config.update({k: v for k, v in names.items() if v in enc._special_tokens})
    if chat_template is not None:
        config["chat_template"] = chat_template
    atomic_write(os.path.join(out_dir, "tokenizer.json"), json.dumps(tokenizer_json, ensure_ascii=False))
    atomic_write(os.path.join(out_dir, "tokenizer_config.json"), json.dumps(config, indent=2))


# -----------------------------------------------------------------------------
# Reading Hugging Face, Llama 3 and GGUF tokenizer files: each returns (enc, meta, chat template)


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


def read_hf_json(path: str) -> tuple[tiktoken.Encoding, dict, str | None]:
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


def read_vocab_merges(dir: str) -> tuple[tiktoken.Encoding, dict, str | None]:
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


def read_llama3_model(path: str) -> tuple[tiktoken.Encoding, dict, str | None]:
    """A Llama 3 tokenizer.model: tiktoken ranks as `base64(bytes) rank` lines, then the 256
    specials (or those a tokenizer_config.json beside it names) from the next id on."""
    try:
        ranks = read_ranks(path)
    except ValueError as e:
        raise TokenizerError(f"{path}: not a tiktoken rank file (SentencePiece tokenizer.model files "
                             f"are not supported): {e}") from None
    cfg = _hf_config(os.path.dirname(path))
    n = max(ranks.values()) + 1
    specials = cfg["added"] or {s: n + i for i, s in enumerate(LLAMA3_SPECIALS)}
    enc = tiktoken.Encoding(name=os.path.basename(os.path.dirname(os.path.abspath(path))) or "llama3",
                            pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks, special_tokens=specials)
    meta = {"source": path, "bos_token": cfg["bos"] or "<|begin_of_text|>", "eos_token": cfg["eos"]}
    return enc, meta, None  # the template, if any, is not read: no default system


def read_gguf(path: str) -> tuple[tiktoken.Encoding, dict, str | None]:
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
# tiktoken's rank file: Llama 3's tokenizer.model, and our own tokenizer.tiktoken


def read_ranks(path: str) -> dict[bytes, int]:
    """{token bytes: rank} from a tiktoken rank file: one `base64(bytes) rank` line per token."""
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
