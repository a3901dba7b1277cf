"""mm_hub tests: a package, so that test modules import the shared factories from `tests.conftest`."""
