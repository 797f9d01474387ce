"""Shared fixtures: each group lives in its own module under tests/fixtures/."""

pytest_plugins = [
    "tests.fixtures.common",
    "tests.fixtures.gateway_proc",
    "tests.fixtures.mosquitto",
    "tests.fixtures.powercut",
    "tests.fixtures.store",
    "tests.fixtures.tcp_proxy",
]
