"""The package's imports run one way: no cycles (top-level and function-local imports alike; ``TYPE_CHECKING`` blocks
aside), and no ``_private`` name imported from another avidzoo module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "avidzoo"  # the checkout's source (CI installs a copy into site-packages)


def module_name(path: Path, root: Path = PACKAGE.parent) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
        (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports(path: Path, modules: set[str], root: Path = PACKAGE.parent) -> list[tuple[str, str | None, int]]:
    """``(imported avidzoo module, imported name or None, line)`` for every import in the file."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                found.extend((a.name, None, child.lineno) for a in child.names if a.name.split(".")[0] == "avidzoo")
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target.split(".")[0] != "avidzoo":
                    continue
                for a in child.names:
                    sub = f"{target}.{a.name}"
                    if sub in modules:  # `from . import hub` imports the module avidzoo.hub
                        found.append((sub, None, child.lineno))
                    else:
                        found.append((target, a.name, child.lineno))
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def graph(package: Path = PACKAGE) -> tuple[dict[str, set[str]], list[str]]:
    """The import graph of the package folder, and its imports of private names from other modules."""
    files = sorted(package.rglob("*.py"))
    modules = {module_name(f, package.parent) for f in files}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    private = []
    root = package.name
    for f in files:
        src = module_name(f, package.parent)
        for target, name, line in imports(f, modules, package.parent):
            if target != src:
                edges[src].add(target)
            # Importing a.sub.mod first runs a.sub's __init__ (which may import more), unless src is inside a.sub.
            # The root package's __init__ is left out: it runs before any of its modules.
            parts = target.split(".")
            for i in range(2, len(parts)):
                parent = ".".join(parts[:i])
                if parent in modules and parent != root and not src.startswith(parent + ".") and parent != src:
                    edges[src].add(parent)
            if name and name.startswith("_") and not name.startswith("__") and target != src:
                private.append(f"{f.relative_to(package.parent)}:{line} imports {name} from {target}")
    return edges, private


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(edges.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (cycle := dfs(n)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state and (cycle := dfs(m)):
            return cycle
    return None


def test_imports_have_no_cycle_and_no_private_names():
    edges, private = graph()
    assert len(edges) > 20 and "avidzoo.hub" in edges["avidzoo.factory"]  # the reader sees the real graph
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges))
    assert private == []


def test_the_checker_finds_a_cycle_and_a_private_import(tmp_path):
    pkg = tmp_path / "avidzoo"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub.b import _helper\n")
    (pkg / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..c import C\n"
                                      "def f():\n    from .. import a\n")
    (pkg / "c.py").write_text("from .sub import b\n")
    (pkg / "d.py").write_text("from .sub.b import f\n")  # runs avidzoo/sub/__init__.py first
    edges, private = graph(pkg)
    assert edges["avidzoo.sub.b"] == {"avidzoo.a"} and edges["avidzoo.c"] == {"avidzoo.sub", "avidzoo.sub.b"}
    assert edges["avidzoo.d"] == {"avidzoo.sub", "avidzoo.sub.b"}
    assert find_cycle(edges) == ["avidzoo.a", "avidzoo.sub.b", "avidzoo.a"]
    assert private == ["avidzoo/a.py:1 imports _helper from avidzoo.sub.b"]


def test_layout_page_names_every_module():
    """docs/package-layout.md's package map lists every module and subpackage of the tree, and nothing that is not
    there."""
    text = (REPO_ROOT / "docs" / "package-layout.md").read_text(encoding="utf-8")
    block = text.split("```", 2)[1]
    named = set(re.findall(r"(?<![\w./])([a-z_]+(?:\.py|/))", block))
    top = {p.name + ("/" if p.is_dir() else "") for p in PACKAGE.iterdir()
           if (p.suffix == ".py" or (p / "__init__.py").is_file()) and p.name not in ("__init__.py", "__main__.py",
                                                                                   "_version.py")}
    sub = {f.name for d in PACKAGE.iterdir() if (d / "__init__.py").is_file() for f in d.glob("*.py")
           if f.name != "__init__.py"}
    assert top <= named and sub <= named, (sorted(top - named), sorted(sub - named))
    assert named <= top | sub | {"avidzoo/"}, sorted(named - top - sub)
