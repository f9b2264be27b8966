"""The house rules of docs/design.md, checked on the source: no import circles, nothing imports a later
stage, numerics/ imports neither onnx nor torch, no module over ~400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "bert2onnxq"

# The stages in the order the data flows; a module may import its own rank or a lower one.
# graph.locate only reads the exported graph (which tensors are weights): every stage uses it.
RANKS = [
    ("base", ["errors", "hub", "numerics", "plan", "onnx_io", "tasks", "runtime", "latency", "graph.locate"]),
    ("export", ["export"]),
    ("analyse", ["analyse"]),
    ("decide", ["methods"]),
    ("quantize", ["quantize"]),
    ("apply", ["graph"]),
    ("convert", ["convert"]),
    ("validate / bench / inspect / report", ["validate", "bench", "inspect", "report"]),
    ("sweep / search", ["sweep", "search"]),
    ("cli", ["cli", "__main__"]),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def rank(module: str) -> int:
    best = None
    for i, (_, prefixes) in enumerate(RANKS):
        for p in prefixes:
            if module == p or module.startswith(p + "."):
                if best is None or len(p) > best[1]:
                    best = (i, len(p))
    return best[0] if best else 0  # the package's own __init__ (version only)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    if node.level == 0:
        base = node.module or ""
        if not base.startswith("bert2onnxq"):
            return []
        base = base.removeprefix("bert2onnxq").lstrip(".")
    else:
        parts = module.split(".") if module else []
        keep = len(parts) - node.level + (1 if is_package else 0)
        base = ".".join(parts[:keep] + ([node.module] if node.module else []))
    names = [base] if node.module or not node.names else []
    if not node.module:  # from . import x: x is a module
        names = [f"{base}.{a.name}".strip(".") for a in node.names]
    else:  # from .m import x: x may be a submodule of m
        names += [f"{base}.{a.name}" for a in node.names]
    return names


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text())
        deps: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
                node.body = []  # annotations only
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.ImportFrom):
                targets = _resolve(name, path.name == "__init__.py", node)
            elif isinstance(node, ast.Import):
                targets = [a.name.removeprefix("bert2onnxq").lstrip(".") for a in node.names
                           if a.name.startswith("bert2onnxq")]
            deps |= {t for t in targets if t in files and t != name}
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_no_import_cycle():
    # a package imports its submodules and they import siblings through it: only module -> module edges count
    graph = {n: {d for d in deps if not n.startswith(d + ".")} for n, deps in import_graph().items()}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_finds_a_cycle_when_there_is_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_nothing_imports_a_later_stage():
    upward = [f"{n} ({RANKS[rank(n)][0]}) imports {d} ({RANKS[rank(d)][0]})"
              for n, deps in import_graph().items() for d in deps if rank(d) > rank(n)]
    assert not upward, "\n".join(upward)


def test_numerics_imports_neither_onnx_nor_torch():
    for path in (PACKAGE / "numerics").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] in ("onnx", "onnx_ir", "onnxruntime", "torch") for n in names), path


def test_no_module_over_400_lines():
    long = {module_name(p): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 410}
    assert not long, long
