from fakes.pytest_fixtures import _isolated_cache, fake_trtexec, tiny  # noqa: F401  (pytest fixtures)
