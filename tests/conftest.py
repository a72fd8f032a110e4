"""Test collection. On Python 3.6 (the dom0 interpreter) only the runtime tests run; the
property tests need Hypothesis, which the 3.6 environment does not install."""
import sys

collect_ignore = ["test_properties.py"] if sys.version_info < (3, 7) else []

from tests.netns import netns  # noqa: E402,F401 - the fixture for the runtime network tests
