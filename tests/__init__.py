"""smtptls test suite (a package so that ``tests.lab`` is importable)."""
