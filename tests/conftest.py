"""Test collection. On Python 3.6 (the dom0 interpreter) only the runtime tests run; the
property tests need Hypothesis, which the 3.6 environment does not install."""
import sys

import pytest

collect_ignore = ["test_properties.py"] if sys.version_info < (3, 7) else []

from tests.netns import netns  # noqa: E402,F401 - the fixture for the runtime network tests
from tests.servers import cert, hook, silent, smtp  # noqa: E402,F401 - servers on loopback


@pytest.fixture(autouse=True)
def no_host_configuration(tmp_path_factory, monkeypatch):
    """The CLI reads this host's /etc/halizard/halizard.toml by default: tests give their own
    file, or none (HALIZARD_CONFIG names one that does not exist)."""
    monkeypatch.setenv("HALIZARD_CONFIG", str(tmp_path_factory.getbasetemp() / "no-such.toml"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report on the test item (``item.rep_call``), so that a fixture can keep
    what a failed test leaves behind (the lab tests keep their lab directory)."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)
