"""Shared pytest set-up.  Fixture modules of each layer are registered here."""

pytest_plugins = [
    "tests.fixtures_s3",
    "tests.fixtures_server",
    "tests.fixtures_dimse",
]
