"""halizard: two-node high availability for XenServer and XCP-ng pools."""

__version__ = "0.1.0"
