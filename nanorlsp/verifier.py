"""
Answer extraction and checking.

Every nanorlsp response (synthetic or real math) ends with its final answer in \\boxed{...}, so
one extractor serves all tasks. This module starts with the extraction primitive the exact task
checkers need; the full sympy equivalence checker builds on it.
"""


def last_boxed(text: str) -> str | None:
    r"""Content of the last \boxed{...} in `text` (balanced braces), or of a bare `\boxed x`.

    Returns None when there is no \boxed, or when its braces never close (a truncated answer is
    no answer). Linear time, no regex backtracking: model output is untrusted input.
    """
    i = text.rfind("\\boxed")
    if i < 0:
        return None
    j = i + len("\\boxed")
    if j < len(text) and text[j] == "{":
        depth = 0
        for k in range(j, len(text)):
            c = text[k]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    return text[j + 1:k]
        return None  # unbalanced: never closed
    if j < len(text) and text[j] == " ":
        # "\boxed 5": the token after the space, up to whitespace or '$'
        rest = text[j + 1:].lstrip()
        out = []
        for c in rest:
            if c.isspace() or c == "$":
                break
            out.append(c)
        return "".join(out) or None
    return None
