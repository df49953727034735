# Root conftest: makes `components` and `tests` importable from the repo root.
