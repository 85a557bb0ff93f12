"""The package's imports run one way: no nanorlsp module imports another that imports it back.

A cycle works until someone imports the modules in the other order (or moves an import to the
top of a file), then fails with "cannot import name" half-initialised; hf.py and checkpoint.py
had one, hidden by an import inside load_model. Imports inside functions count here too.
"""
import ast
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "nanorlsp")


def import_graph() -> dict[str, set[str]]:
    """module -> the nanorlsp modules it imports anywhere in its source (top level or not).
    Names are dotted below the package: "checkpoint", "tooling.hf"."""
    graph = {}
    for dirpath, _, files in os.walk(PKG):
        for f in sorted(files):
            if not f.endswith(".py") or f == "__init__.py":
                continue
            path = os.path.join(dirpath, f)
            name = os.path.relpath(path, PKG)[:-3].replace(os.sep, ".")
            deps = set()
            for node in ast.walk(ast.parse(open(path).read())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nanorlsp"):
                    sub = node.module[len("nanorlsp") + 1:]            # "" or "tooling.hf"
                    for a in node.names:                               # from nanorlsp import dist
                        full = f"{sub}.{a.name}" if sub else a.name     # from nanorlsp.tooling import hf
                        # from nanorlsp.tooling.hf import save_hf: the module is sub
                        deps.add(full if os.path.exists(os.path.join(PKG, *full.split(".")) + ".py")
                                 else sub)
                elif isinstance(node, ast.Import):
                    deps |= {a.name[len("nanorlsp."):] for a in node.names
                             if a.name.startswith("nanorlsp.")}
            graph[name] = deps - {name, ""}
    return graph


def find_cycle(graph):
    """One import cycle as a list of modules [a, b, ..., a], or None (depth-first search)."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == "open":
                return stack[stack.index(d):] + [d]
            if d not in state and (c := visit(d)):
                return c
        state[m] = "done"
        stack.pop()
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_package_imports_are_acyclic():
    graph = import_graph()
    assert {"tooling.hf", "checkpoint", "common", "model", "tooling.report"} <= set(graph)
    assert "tooling.hf" in graph["checkpoint"] and "tooling.plot" in graph["tooling.report"]
    assert "tooling.tokenizer_hf" in graph["tokenizer"]  # the file readers sit in tooling/
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_hf_imports_without_checkpoint_and_the_public_names_stay():
    """hf.py alone does not pull in checkpoint.py; checkpoint.py still exports what users import,
    and they are the same objects as hf.py's (one CheckpointError class to catch)."""
    code = ("import sys; import nanorlsp.tooling.hf as hf; assert 'nanorlsp.checkpoint' not in sys.modules; "
            "from nanorlsp.checkpoint import CheckpointError, load_model, save_hf, unwrap; "
            "assert CheckpointError is hf.CheckpointError and save_hf is hf.save_hf; "
            "assert unwrap is hf.unwrap; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
