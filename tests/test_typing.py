"""Type hints on every public signature of the package (py.typed promises them): read from the source with
ast, so nothing is imported and no annotation is evaluated."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "score_sde"
# Dunder methods that are part of a public class's interface: `__init__` (arguments only: it returns None)
# and `__call__` (the feature networks, Compiled, the samplers' score-function wrappers).
PUBLIC_DUNDERS = ("__init__", "__call__")


def _is_public(name):
    return not name.startswith("_")


def _top_level(body):
    """The statements of a module body, looking inside `if` / `try` / `with` blocks but not into functions
    or classes."""
    for node in body:
        if isinstance(node, ast.If | ast.Try | ast.With):
            for block in (node.body, getattr(node, "orelse", []), getattr(node, "finalbody", [])):
                yield from _top_level(block)
            for handler in getattr(node, "handlers", []):
                yield from _top_level(handler.body)
        else:
            yield node


def _is_staticmethod(function):
    return any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in function.decorator_list)


def _missing(function, method):
    """What the function's signature leaves unannotated: argument names (`*args`, `**kwargs` marked) and
    'return'."""
    args = function.args
    positional = [*args.posonlyargs, *args.args]
    if method and not _is_staticmethod(function) and positional and positional[0].arg in ("self", "cls"):
        positional = positional[1:]
    missing = [a.arg for a in (*positional, *args.kwonlyargs) if a.annotation is None]
    if args.vararg is not None and args.vararg.annotation is None:
        missing.append("*" + args.vararg.arg)
    if args.kwarg is not None and args.kwarg.annotation is None:
        missing.append("**" + args.kwarg.arg)
    if function.returns is None and function.name != "__init__":
        missing.append("return")
    return missing


def public_signatures(path):
    """(qualified name, line, function node, is a method) of the module's public functions and the public
    methods (and PUBLIC_DUNDERS) of its public classes."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in _top_level(tree.body):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _is_public(node.name):
            yield node.name, node, False
        elif isinstance(node, ast.ClassDef) and _is_public(node.name):
            for member in node.body:
                if isinstance(member, ast.FunctionDef | ast.AsyncFunctionDef) and (
                        _is_public(member.name) or member.name in PUBLIC_DUNDERS):
                    yield f"{node.name}.{member.name}", member, True


def unannotated(package=PACKAGE):
    """'path:line name: missing' for every public signature under package that lacks an annotation."""
    offenders = []
    for path in sorted(package.rglob("*.py")):
        for name, function, method in public_signatures(path):
            missing = _missing(function, method)
            if missing:
                where = path.relative_to(package.parent)
                offenders.append(f"{where}:{function.lineno} {name}: {', '.join(missing)}")
    return offenders


def test_every_public_signature_is_annotated():
    offenders = unannotated()
    assert not offenders, f"{len(offenders)} public signatures lack annotations:\n" + "\n".join(offenders)


def test_the_check_sees_what_is_missing(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "mod.py").write_text(
        "def f(x, y: int, *args, **kwargs) -> int: ...\n"
        "def g(x: int): ...\n"
        "def _private(x): ...\n"
        "class A:\n"
        "    def __init__(self, a): ...\n"
        "    def method(self, b: int) -> None: ...\n"
        "    @staticmethod\n"
        "    def static(self) -> None: ...\n"
        "    def __call__(self, x: int): ...\n"
        "    def __len__(self): ...\n"
        "class _Hidden:\n"
        "    def method(self, b): ...\n"
        "def ok(x: int, *args: int, **kwargs: str) -> None: ...\n"
    )
    assert unannotated(package) == [
        "pkg/mod.py:1 f: x, *args, **kwargs",
        "pkg/mod.py:2 g: return",
        "pkg/mod.py:5 A.__init__: a",
        "pkg/mod.py:8 A.static: self",
        "pkg/mod.py:9 A.__call__: return",
    ]
