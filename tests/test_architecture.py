"""The decision core and the loop do no I/O: they import nothing that reads time, draws
randomness, opens sockets, runs processes or threads, or talks XenAPI."""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORBIDDEN = {
    "time", "random", "socket", "subprocess", "threading", "asyncio", "XenAPI", "os", "select",
    "selectors", "signal", "multiprocessing", "concurrent", "datetime", "uuid", "http", "urllib",
    "xmlrpc", "ssl", "fcntl", "icmplib", "pyroute2", "systemd", "simulations",
}
ALLOWED_HALIZARD = ("halizard.core", "halizard.effects")


def pure_files():
    files = [os.path.join(ROOT, "halizard", "loop.py"), os.path.join(ROOT, "halizard", "effects.py")]
    core = os.path.join(ROOT, "halizard", "core")
    files += sorted(os.path.join(core, f) for f in os.listdir(core) if f.endswith(".py"))
    return files


def imported_modules(path):
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                yield "halizard.core"  # relative import inside the package
            elif node.module:
                yield node.module


@pytest.mark.runtime
@pytest.mark.parametrize("path", pure_files(), ids=lambda p: os.path.relpath(p, ROOT))
def test_core_and_loop_import_no_io(path):
    for module in imported_modules(path):
        top = module.split(".")[0]
        assert top not in FORBIDDEN, "%s imports %s" % (path, module)
        if top == "halizard":
            assert module.startswith(ALLOWED_HALIZARD), "%s imports %s" % (path, module)


@pytest.mark.runtime
def test_the_check_sees_a_forbidden_import(tmp_path):
    """The checker itself must be able to fail."""
    bad = tmp_path / "bad.py"
    bad.write_text("import time\nfrom socket import socket\n")
    found = set(imported_modules(str(bad)))
    assert {"time", "socket"} <= found
