"""pytest from the project root runs the conformance cases (cases/) and the suite's own
tests (tests/); the pinhole plugin supplies fixtures, options and results."""

pytest_plugins = ["conformance.plugin"]
