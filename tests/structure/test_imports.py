"""The package's modules import one another in one direction: no import cycles, lazy imports inside functions
included; ``kernels/`` is a leaf (of the package it may import only ``functional``); no module imports another's
private names. Read from the source with ``ast``, so nothing is imported."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "ether_diffusion"
KERNELS = "ether_diffusion.kernels"
KERNELS_MAY_IMPORT = {"ether_diffusion.functional"}


def package_modules(root: Path = ROOT) -> dict[str, Path]:
    """'ether_diffusion.x.y' -> its file, for every module of the package."""
    mods = {}
    for path in root.rglob("*.py"):
        name = ".".join(path.relative_to(root.parent).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    return mods


def imports(mod: str, path: Path, mods: dict[str, Path]):
    """(the node, the module it imports from, [(the name imported, the module it is, if one)]) for every import
    statement of ``mod``."""
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                target = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [(alias.name, f"{target}.{alias.name}" if f"{target}.{alias.name}" in mods else None)
                     for alias in node.names]
            yield node, target, names
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name, []


def import_graph() -> dict[str, set[str]]:
    mods = package_modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        for _, target, names in imports(mod, path, mods):
            found = [target] + [m for _, m in names if m]
            graph[mod].update(n for n in found if n in mods and n != mod)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    graph = import_graph()
    assert "ether_diffusion.kernels.step_fold" in graph and graph["ether_diffusion.model"]  # the scan sees the package
    assert cycles(graph) == []


def test_every_import_of_the_package_names_one_of_its_modules():
    mods = package_modules()
    missing = [f"{mod}: {target}" for mod, path in mods.items() for node, target, _ in imports(mod, path, mods)
               if (getattr(node, "level", 0) or target.split(".")[0] == "ether_diffusion") and target not in mods]
    assert missing == []


def kernels_imports_outside(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """kernels module -> the modules of the package outside kernels/ it imports, beyond ``KERNELS_MAY_IMPORT``."""
    inside = lambda m: m == KERNELS or m.startswith(KERNELS + ".")  # noqa: E731
    out = {m: {t for t in targets if not inside(t) and t not in KERNELS_MAY_IMPORT and t != "ether_diffusion"}
           for m, targets in graph.items() if inside(m)}
    # ``from .. import x`` reaches the package itself: what it names counts
    return {m: t for m, t in out.items() if t}


def test_kernels_is_a_leaf():
    graph = import_graph()
    assert "ether_diffusion.kernels.step_fold_ops" in graph
    assert kernels_imports_outside(graph) == {}
    # the check itself: an import of the model file from a kernel module is found
    graph[f"{KERNELS}.layout"] = graph[f"{KERNELS}.layout"] | {"ether_diffusion.model", "ether_diffusion.functional"}
    assert kernels_imports_outside(graph) == {f"{KERNELS}.layout": {"ether_diffusion.model"}}


def private_imports(root: Path = ROOT) -> list[str]:
    """'module: name from other' for every private name (``_x``, not ``__x__``) a module of the package imports from
    another module of the package, directly or as an attribute of an imported module (``kernels._x``)."""
    mods = package_modules(root)
    found = []
    for mod, path in mods.items():
        module_aliases = {}  # local name -> a package module imported under it
        for node, target, names in imports(mod, path, mods):
            if isinstance(node, ast.ImportFrom):
                for alias, (name, as_module) in zip(node.names, names):
                    if as_module:
                        module_aliases[alias.asname or name] = as_module
                    elif target in mods and target != mod and _private(name):
                        found.append(f"{mod}: {name} from {target}")
            else:
                for alias in node.names:
                    if alias.name in mods and alias.asname:
                        module_aliases[alias.asname] = alias.name
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in module_aliases and _private(node.attr)
                    and module_aliases[node.value.id] != mod):
                found.append(f"{mod}: {node.attr} from {module_aliases[node.value.id]}")
    return sorted(set(found))


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_private_names_across_modules():
    assert private_imports() == []


def test_the_private_name_finder_finds_them(tmp_path):
    pkg = tmp_path / "ether_diffusion"
    (pkg / "kernels").mkdir(parents=True)
    (pkg / "__init__.py").write_text("__version__ = '0'\n")
    (pkg / "kernels" / "__init__.py").write_text("_on = 1\n")
    (pkg / "a.py").write_text("_x = 1\n__all__ = []\n")
    (pkg / "b.py").write_text("from .a import _x, __all__\nfrom . import kernels, __version__\n"
                              "from . import a as mod\ny = kernels._on + mod._x\n")
    assert private_imports(pkg) == ["ether_diffusion.b: _on from ether_diffusion.kernels",
                                    "ether_diffusion.b: _x from ether_diffusion.a"]
