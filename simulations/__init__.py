"""The deterministic two-host simulator that runs halizard's real decision code."""
