"""The package's shape: an import graph without cycles, no private names imported across
modules, modules and classes small enough to name their one job."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "python" / "jtm_rs"
MAX_FILE_LINES = 400
MAX_CLASS_LINES = 250


def _modules():
    """``{dotted name: path}`` of every module of the package (``__init__`` as the package)."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("jtm_rs",) + path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _native():
    """Compiled modules, known by their stubs."""
    return {"jtm_rs." + p.stem for p in PACKAGE.glob("*.pyi")}


def _imports(name: str, path: Path, modules) -> list:
    """``(module imported, names taken from it)`` for every import in the file, at any depth
    (a function-local import is a dependency all the same)."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.startswith("jtm_rs")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("jtm_rs"):
                continue
            names = [a.name for a in node.names]
            # `from . import x` imports the module x when there is one.
            subs = [n for n in names if f"{target}.{n}" in modules or f"{target}.{n}" in _native()]
            found += [(f"{target}.{n}", []) for n in subs]
            rest = [n for n in names if n not in subs]
            if rest or not subs:
                found.append((target, rest))
    return found


def _graph():
    modules = _modules()
    return modules, {m: _imports(m, p, modules) for m, p in modules.items()}


def test_no_import_cycles():
    modules, graph = _graph()
    # A package's __init__ runs before its submodules: an edge to a package is an edge to its
    # __init__, which is how Python sees it too.
    edges = {m: sorted({t for t, _ in deps if t in modules and t != m}) for m, deps in graph.items()}
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in edges[m]:
            if state.get(t) == "open":
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_private_names_imported_across_modules():
    _, graph = _graph()
    bad = [f"{m} imports {n} from {t}" for m, deps in graph.items() for t, names in deps for n in names
           if n.startswith("_") and not n.startswith("__")]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_classes_stay_small(path):
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_FILE_LINES, f"{path.name}: {len(text.splitlines())} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef):
            n = node.end_lineno - node.lineno + 1
            assert n <= MAX_CLASS_LINES, f"{path.name}: class {node.name} has {n} lines"


def test_the_graph_sees_real_imports():
    """The checker itself: it finds known edges (so a broken parser cannot pass silently)."""
    _, graph = _graph()
    assert ("jtm_rs.joint_loop", []) in [(t, []) for t, _ in graph["jtm_rs.jtm"]]
    assert any(t == "jtm_rs.data" for t, _ in graph["jtm_rs.datasets.table"])
    assert any(t == "jtm_rs._core" for t, _ in graph["jtm_rs.tree_learning"])


def _stub_params(fn: ast.FunctionDef) -> list:
    args = fn.args
    names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    return [n for n in names if n not in ("self", "cls")]


def test_the_native_modules_stub_names_each_functions_parameters():
    """``_core.pyi`` says what the compiled functions and methods take: the same parameter
    names, in order, as their text signatures (a stub that drifted misleads type checkers)."""
    import inspect

    from jtm_rs import _core

    checked = 0
    tree = ast.parse((PACKAGE / "_core.pyi").read_text())
    for node in tree.body:
        owners = [(node, _core)] if isinstance(node, ast.FunctionDef) else []
        if isinstance(node, ast.ClassDef) and hasattr(_core, node.name):
            owners = [(f, getattr(_core, node.name)) for f in node.body if isinstance(f, ast.FunctionDef)]
        for fn, owner in owners:
            native = getattr(owner, fn.name, None)
            if native is None or fn.name.startswith("__") or isinstance(native, property):
                continue
            try:
                sig = inspect.signature(native)
            except (TypeError, ValueError):
                continue  # no text signature (e.g. a property or a slot wrapper)
            names = [p for p in sig.parameters if p not in ("self", "cls", "$self", "$cls", "type")]
            assert names == _stub_params(fn), f"{fn.name}: native {names}, stub {_stub_params(fn)}"
            checked += 1
    assert checked >= 5
