"""The dom0 package (packaging/halizard.spec): built by packaging/build-rpm exactly as `make rpm`
builds it, read back with rpm, installed by rpm into scratch roots (its scriptlets run there,
chrooted, against a systemctl that records what it is asked), and its command run from such a
root with Python 3.6, the dom0 interpreter, on nothing but the package's own libraries.

Needs root (rpm installs files owned by root; the scriptlets run in a chroot) and rpm with
rpmbuild (`make` installs Debian's `rpm` package for the tests), and the network to the package
registry for the pinned dependencies (pip's cache first)."""
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
from importlib.util import MAGIC_NUMBER
from typing import Dict, List, NamedTuple, Optional, Sequence

import pytest

from halizard import __version__

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(REPO, "packaging", "build-rpm")
HZ = "/opt/halizard"
LIB = HZ + "/lib"
CONFIG = "/etc/halizard/halizard.toml"
CALLS = "/var/log/systemctl.calls"  # in the scratch root: what the scriptlets asked systemctl


def python36() -> Optional[str]:
    """The dom0 interpreter: where the Makefile finds it (PYTHON36, pyenv's 3.6.15, python3.6
    on the PATH), or this one when it is 3.6."""
    if sys.version_info[:2] == (3, 6):
        return sys.executable
    for candidate in (os.environ.get("PYTHON36"),
                      os.path.expanduser("~/.pyenv/versions/3.6.15/bin/python3.6"),
                      shutil.which("python3.6")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


PY36 = python36()
pytestmark = [
    pytest.mark.runtime,
    pytest.mark.skipif(os.geteuid() != 0, reason="rpm installs root's files and runs the "
                       "scriptlets chrooted: needs root"),
    pytest.mark.skipif(shutil.which("rpmbuild") is None or shutil.which("rpm") is None,
                       reason="no rpm/rpmbuild: `make debian-packages` installs Debian's rpm"),
    pytest.mark.skipif(PY36 is None, reason="no Python 3.6 (pyenv's 3.6.15 or PYTHON36)"),
]


def run(argv: Sequence[str], timeout: float = 60, **kwargs: object
        ) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=timeout, **kwargs)  # type: ignore


def rpm(*args: str, timeout: float = 60) -> "subprocess.CompletedProcess[str]":
    return run(["rpm"] + list(args), timeout=timeout)


def checked(result: "subprocess.CompletedProcess[str]") -> str:
    assert result.returncode == 0, "%s: exit %d\n%s%s" % (
        " ".join(result.args), result.returncode, result.stdout, result.stderr)
    return result.stdout


def snapshot(top: str, skip: Sequence[str] = ()) -> Dict[str, float]:
    """Every file under ``top`` with its modification time (not the top-level ``skip``)."""
    files = {}
    for directory, dirs, names in os.walk(top):
        if directory == top:
            dirs[:] = [d for d in dirs if d not in skip]
        for name in names:
            path = os.path.join(directory, name)
            files[os.path.relpath(path, top)] = os.lstat(path).st_mtime
    return files


class Built(NamedTuple):
    path: str
    source_changes: List[str]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The package, built as `make rpm` builds it (this interpreter's pip fetches the
    dependencies), into a temporary directory; and what the build changed in the checkout."""
    skip = (".git", ".venv", ".venv36", ".pytest_cache", ".mypy_cache", ".ruff_cache",
            ".hypothesis", "__pycache__")
    before = snapshot(REPO, skip)
    out = str(tmp_path_factory.mktemp("rpm"))
    checked(run([BUILD, out, sys.executable, PY36 or ""], timeout=300))
    after = snapshot(REPO, skip)
    changes = sorted(p for p in set(before) | set(after)
                     if "__pycache__" not in p and before.get(p) != after.get(p))
    rpms = [name for name in os.listdir(out) if name.endswith(".rpm")]
    assert rpms == ["halizard-%s-1.noarch.rpm" % __version__]
    return Built(os.path.join(out, rpms[0]), changes)


def test_build_leaves_the_checkout_alone(built):
    # How long the build takes is a benchmark (BENCHMARKS.md, "The dom0 package"), not a test.
    assert built.source_changes == []


# --- what the package says about itself ---------------------------------------------------------

# What rpm 4.11 (the dom0 of XCP-ng 8.3 / XenServer 8) provides; rpm refuses a package that
# needs any other rpmlib feature (a zstd payload, rich dependencies...).
DOM0_RPMLIB = {"rpmlib(CompressedFileNames)", "rpmlib(FileDigests)",
               "rpmlib(PayloadFilesHavePrefix)", "rpmlib(PayloadIsXz)",
               "rpmlib(VersionedDependencies)"}


def test_metadata(built):
    info = {}
    for line in checked(rpm("-qip", built.path)).splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() and key.strip() not in info:
            info[key.strip()] = value.strip()
    assert info["Name"] == "halizard"
    assert info["Version"] == __version__
    assert info["Release"] == "1"
    assert info["Architecture"] == "noarch"
    assert info["License"].startswith("LicenseRef-Proprietary AND ")
    requires = checked(rpm("-qpR", built.path)).splitlines()
    # python3 and the scriptlets' shell: both in every dom0. Nothing else, and no systemd.
    assert {r for r in requires if not r.startswith("rpmlib(")} == {"python3 >= 3.6", "/bin/sh"}
    rpmlib = {r.split()[0] for r in requires if r.startswith("rpmlib(")}
    assert rpmlib <= DOM0_RPMLIB
    assert checked(rpm("-qp", "--qf", "%{PAYLOADCOMPRESSOR}", built.path)) in ("gzip", "xz")
    assert checked(rpm("-qp", "--provides", built.path)).split() == [
        "halizard", "=", "%s-1" % __version__]


def test_pyproject_names_the_same_version():
    with open(os.path.join(REPO, "pyproject.toml"), encoding="utf-8") as handle:
        assert re.search(r'^version = "%s"$' % re.escape(__version__), handle.read(), re.M)


def pinned_dists() -> List[str]:
    """The dist-info directories of requirements/runtime-py36.txt, less systemd-python."""
    dists = []
    with open(os.path.join(REPO, "requirements", "runtime-py36.txt"), encoding="utf-8") as f:
        for line in f:
            line = line.split("#")[0].strip()
            if line and not line.startswith("systemd-python"):
                name, version = line.split("==")
                dists.append("%s-%s.dist-info" % (name.lower().replace("-", "_"), version))
    return dists


def source_files(top: str, suffix: str) -> List[str]:
    found = []
    for directory, dirs, names in os.walk(os.path.join(REPO, top)):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        found.extend(os.path.relpath(os.path.join(directory, n), REPO)
                     for n in names if n.endswith(suffix))
    return found


def test_file_list(built):
    files = set(checked(rpm("-qlp", built.path)).splitlines())
    for path in ("/usr/bin/halizard", HZ + "/bin/halizard", "/usr/lib/systemd/system/halizard.service",
                 CONFIG, "/usr/share/bash-completion/completions/halizard",
                 "/usr/share/doc/halizard/README.md", "/usr/share/doc/halizard/docs/ARCHITECTURE.md",
                 "/var/lib/halizard"):
        assert path in files
    # All of halizard and the simulator with its scenario and regression files, and bytecode for
    # Python 3.6 beside every module.
    for source in source_files("halizard", ".py") + source_files("simulations", ".py") + \
            source_files("simulations", ".toml"):
        assert "%s/%s" % (LIB, source) in files
    for module in (f for f in files if f.startswith(LIB) and f.endswith(".py")):
        directory, name = os.path.split(module)
        assert "%s/__pycache__/%s.cpython-36.pyc" % (directory, name[:-3]) in files
    assert not [f for f in files if f.endswith(".pyc") and ".cpython-36." not in f]
    # The pinned dependencies, nothing compiled (noarch), no icmplib (halizard does not use it),
    # no systemd binding (the host's is used when it has one), no console scripts.
    top = {f[len(LIB) + 1:].split("/")[0] for f in files if f.startswith(LIB + "/")}
    assert {d for d in top if d.endswith(".dist-info")} == set(pinned_dists())
    assert not [f for f in files if re.search(r"\.so(\.|$)", f)]
    assert not top & {"systemd", "icmplib", "bin"}
    assert {f for f in files if f.startswith("/") and not f.startswith(HZ)} == {
        "/usr/bin/halizard", "/usr/lib/systemd/system/halizard.service", "/etc/halizard", CONFIG,
        "/usr/share/bash-completion/completions/halizard", "/var/lib/halizard",
        "/usr/share/doc/halizard", "/usr/share/doc/halizard/README.md",
        "/usr/share/doc/halizard/BENCHMARKS.md", "/usr/share/doc/halizard/docs",
        "/usr/share/doc/halizard/docs/ARCHITECTURE.md", "/usr/share/doc/halizard/docs/SCENARIOS.md"}
    attrs = {}
    for line in checked(rpm("-qp", "--qf", "[%{FILEMODES:perms} %{FILEUSERNAME} "
                            "%{FILEFLAGS:fflags}. %{FILENAMES} %{FILELINKTOS}\n]",
                            built.path)).splitlines():
        mode, user, flags, name, link = (line.split(" ") + [""])[:5]
        attrs[name] = (mode, user, flags.rstrip("."), link)
    assert attrs["/usr/bin/halizard"][0].startswith("l")
    assert attrs["/usr/bin/halizard"][3] == "../../opt/halizard/bin/halizard"
    assert attrs[CONFIG][:3] == ("-rw-------", "root", "cn")  # %config(noreplace), 0600
    assert attrs["/var/lib/halizard"][:2] == ("drwx------", "root")
    assert attrs[HZ + "/bin/halizard"][0] == "-rwxr-xr-x"
    assert all(a[1] == "root" for a in attrs.values())


def scriptlets(path: str) -> Dict[str, str]:
    """``rpm --scripts`` by scriptlet: {"postinstall": body, ...}."""
    found: Dict[str, List[str]] = {}
    current: Optional[List[str]] = None
    for line in checked(rpm("-qp", "--scripts", path)).splitlines():
        m = re.match(r"^(\w+) (?:scriptlet|program) \(using (\S+)\):$", line)
        if m:
            assert m.group(2) == "/bin/sh"
            current = found.setdefault(m.group(1), [])
        else:
            assert current is not None, line
            current.append(line)
    return {k: "\n".join(v) for k, v in found.items()}


def test_scriptlets_never_enable_start_or_restart(built):
    scripts = scriptlets(built.path)
    assert set(scripts) == {"postinstall", "preuninstall", "postuninstall"}
    code = {k: "\n".join(line for line in v.splitlines() if not line.strip().startswith("#"))
            for k, v in scripts.items()}
    for body in code.values():
        assert not re.search(r"\b(enable|start|restart|try-restart|reload-or-restart)\b", body)
        assert "halizard " not in body and "xe " not in body  # nothing switches HA on or off
        for line in (line for line in body.splitlines() if "systemctl" in line):
            # Without a running systemd the call fails, and the scriptlet does not.
            assert re.match(r"^\s*systemctl [^|;&>]*>/dev/null 2>&1 \|\| :$", line), line
    assert "systemctl daemon-reload" in code["postinstall"]
    # Removal only (not upgrade: $1 is 1 then): disable and stop.
    assert re.search(r'if \[ "\$1" -eq 0 \]; then\n\s+systemctl --no-reload disable '
                     r'halizard.service .*\n\s+systemctl stop halizard.service .*\nfi',
                     code["preuninstall"])


# --- installed into scratch roots -----------------------------------------------------------------

def scratch_root(path: str) -> str:
    """A root where rpm can run the package's scriptlets: /bin/sh with the libraries it loads,
    /dev/null, and a systemctl that writes its arguments to CALLS and fails, as on a system
    without a running systemd."""
    os.makedirs(path)
    shell = os.path.realpath("/bin/sh")
    needed = [("/bin/sh", shell)]
    for line in checked(run(["ldd", shell], timeout=10)).splitlines():
        m = re.search(r"(?:=> )?(/\S+) \(0x", line)
        if m:
            needed.append((m.group(1), os.path.realpath(m.group(1))))
    for where, real in needed:
        os.makedirs(os.path.dirname(path + where), exist_ok=True)
        shutil.copy2(real, path + where)
    os.makedirs(path + "/dev", exist_ok=True)
    os.mknod(path + "/dev/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.chmod(path + "/dev/null", 0o666)
    os.makedirs(path + "/usr/bin", exist_ok=True)
    os.makedirs(path + os.path.dirname(CALLS), exist_ok=True)
    with open(path + "/usr/bin/systemctl", "w") as handle:
        handle.write('#!/bin/sh\necho "$*" >> %s\nexit 1\n' % CALLS)
    os.chmod(path + "/usr/bin/systemctl", 0o755)
    checked(rpm("--root", path, "--initdb"))
    return path


def systemctl_calls(root: str) -> List[str]:
    try:
        with open(root + CALLS) as handle:
            return handle.read().splitlines()
    except FileNotFoundError:
        return []


def install(root: str, package: str, *options: str) -> None:
    checked(rpm("--root", root, "--nodeps", *(options or ("-i",)), package))


@pytest.fixture(scope="module")
def installed(built, tmp_path_factory):
    root = scratch_root(str(tmp_path_factory.mktemp("installed") / "root"))
    install(root, built.path)
    return root


def halizard(root: str, *args: str, python: Optional[str] = None, cwd: Optional[str] = None,
             timeout: float = 60) -> "subprocess.CompletedProcess[str]":
    """The installed command, as ``python3 ROOT/usr/bin/halizard``: -S -E -s, so that nothing
    but the interpreter's standard library and the package's own libraries is there."""
    return run([python or PY36 or "", "-S", "-E", "-s", root + "/usr/bin/halizard"] + list(args),
               timeout=timeout, cwd=cwd)


def fill_in(root: str, directory: str) -> str:
    """The installed example with lab addresses (198.18.0.0/15) and a password file of mode
    0600, as the operator fills it in, at its installed path."""
    password = os.path.join(directory, "xapi-password")
    with open(password, "w") as handle:
        handle.write("lab\n")
    os.chmod(password, 0o600)
    with open(root + CONFIG, encoding="utf-8") as handle:
        text = handle.read()
    for key, value in (("peer_addresses", '["198.18.0.12", "198.19.0.12"]'),
                       ("gateway_addresses", '["198.18.0.1"]'),
                       ("xapi_password_file", '"%s"' % password)):
        text, count = re.subn(r"(?m)^%s = .*$" % key, "%s = %s" % (key, value), text)
        assert count == 1, key
    assert "FILL IN" not in text.split("# fence_options")[0]
    with open(root + CONFIG, "w", encoding="utf-8") as handle:
        handle.write(text)
    return root + CONFIG


def test_installed_files_are_the_sources(installed):
    for source, target in (("systemd/halizard.service", "/usr/lib/systemd/system/halizard.service"),
                           ("examples/halizard.toml", CONFIG),
                           ("completion/halizard.bash",
                            "/usr/share/bash-completion/completions/halizard"),
                           ("packaging/halizard", HZ + "/bin/halizard"),
                           ("README.md", "/usr/share/doc/halizard/README.md")):
        with open(os.path.join(REPO, source), "rb") as a, open(installed + target, "rb") as b:
            assert a.read() == b.read(), target
    assert os.readlink(installed + "/usr/bin/halizard") == "../../opt/halizard/bin/halizard"
    assert stat.S_IMODE(os.stat(installed + "/var/lib/halizard").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(installed + CONFIG).st_mode) == 0o600
    assert systemctl_calls(installed) == ["daemon-reload"]  # and nothing else


def test_installed_bytecode_is_valid_for_python36(installed):
    """Python 3.6 uses the shipped bytecode only when it names the installed source's time and
    size: rpm must have kept the times the bytecode was compiled against."""
    modules = 0
    for directory, dirs, names in os.walk(installed + LIB):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in (n for n in names if n.endswith(".py")):
            source = os.path.join(directory, name)
            compiled = os.path.join(directory, "__pycache__", name[:-3] + ".cpython-36.pyc")
            with open(compiled, "rb") as handle:
                header = handle.read(12)
            info = os.stat(source)
            assert header[:4] == (MAGIC_NUMBER if sys.version_info[:2] == (3, 6)
                                  else b"\x33\x0d\x0d\x0a"), compiled  # 3379: Python 3.6
            assert struct.unpack("<II", header[4:12]) == (
                int(info.st_mtime) & 0xFFFFFFFF, info.st_size & 0xFFFFFFFF), source
            modules += 1
    assert modules > 300


def test_installed_command_runs_on_python36(installed, tmp_path):
    before = snapshot(installed + HZ)
    out = halizard(installed, "--version")
    assert checked(out).strip() == "halizard %s" % __version__
    # The example as installed: refused (the daemon exits 78 on it) until the addresses are in.
    out = halizard(installed, "config", "validate", installed + CONFIG)
    assert out.returncode == 1
    assert "peer_addresses: \"FILL IN" in out.stderr and "gateway_addresses" in out.stderr
    config = fill_in(installed, str(tmp_path))
    out = halizard(installed, "config", "validate", config)
    assert "%s: valid" % config in checked(out)
    assert "takeover_delay          12.000s > " in out.stdout
    # A few of the scenarios the package carries, and the matrix with the operator's file.
    shipped = installed + LIB + "/simulations"
    scenarios = [shipped + "/scenarios/H01-slave-crash.toml",
                 shipped + "/scenarios/H02-master-crash.toml",
                 shipped + "/regressions/R001-watchdog-reset-boots-isolated.toml"]
    out = halizard(installed, "simulate", "--seeds", "2", *scenarios, cwd=str(tmp_path))
    text = checked(out)
    for name in ("H01", "H02", "R001"):
        assert re.search(r"^%s\s.*\s2\s+pass\s" % name, text, re.M), text
    assert "3 scenarios, 6 runs, 0 failed" in text
    out = halizard(installed, "simulate", "--config", config, "--seeds", "1", scenarios[1],
                   cwd=str(tmp_path))
    assert re.search(r"^H02\s.*\s1\s+pass\s", checked(out), re.M)
    if sys.version_info[:2] != (3, 6):
        # A newer python3 runs it too (the launcher keeps the 3.6 dataclasses backport away).
        out = halizard(installed, "config", "validate", config, python=sys.executable)
        assert "%s: valid" % config in checked(out)
    assert snapshot(installed + HZ) == before  # no bytecode or anything else written


def test_a_system_systemd_binding_is_used(installed, tmp_path):
    """The package carries no systemd-python: the host's, on the path after the package's own
    libraries, is found (here a stand-in on PYTHONPATH; site-packages comes later still)."""
    fake = tmp_path / "site" / "systemd"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "daemon.py").write_text("def notify(state):\n    return True\n")
    (fake / "journal.py").write_text("def send(*args, **fields):\n    return None\n")
    probe = ("import runpy\n"
             "runpy.run_path(%r, run_name='launcher')\n"
             "from halizard.runtime import systemd\n"
             "import XenAPI, pyroute2, tomli, typing_extensions, dataclasses\n"
             "for m in (systemd, XenAPI, pyroute2, tomli, typing_extensions, dataclasses):\n"
             "    print(m.__name__, m.__file__)\n"
             "print('binding', systemd.HAVE_BINDING, systemd._sd_daemon.__file__)\n"
             % (installed + "/usr/bin/halizard"))
    out = run([PY36 or "", "-S", "-s", "-c", probe], timeout=30,
              env=dict(os.environ, PYTHONPATH=str(tmp_path / "site")))
    lines = checked(out).splitlines()
    assert lines[-1] == "binding True %s" % (fake / "daemon.py")
    for line in lines[:-1]:
        assert line.split()[1].startswith(installed + LIB + "/"), line


def test_upgrade_keeps_the_daemon_and_the_file_removal_stops_it(built, tmp_path):
    root = scratch_root(str(tmp_path / "root"))
    install(root, built.path)
    assert systemctl_calls(root) == ["daemon-reload"]
    config = fill_in(root, str(tmp_path))
    with open(config) as handle:
        edited = handle.read()
    # An upgrade (the same package again, as `rpm -U` of a new one runs the same scriptlets):
    # systemd reads the unit again; the daemon is not restarted; the edited file stays.
    install(root, built.path, "-U", "--replacepkgs")
    assert systemctl_calls(root) == ["daemon-reload", "daemon-reload"]
    with open(config) as handle:
        assert handle.read() == edited
    # Removal: disabled and stopped (a planned stop), the edited file kept as .rpmsave.
    checked(rpm("--root", root, "-e", "halizard"))
    assert systemctl_calls(root) == ["daemon-reload", "daemon-reload",
                                     "--no-reload disable halizard.service",
                                     "stop halizard.service", "daemon-reload"]
    with open(config + ".rpmsave") as handle:
        assert handle.read() == edited
    assert not os.path.lexists(root + "/usr/bin/halizard")
    assert not os.path.exists(root + HZ)
    assert checked(rpm("--root", root, "-qa")).strip() == ""
