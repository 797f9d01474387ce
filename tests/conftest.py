"""Shared fixtures: each group lives in its own module under tests/support/."""

pytest_plugins = [
    "tests.support.common",
    "tests.support.cluster",
    "tests.support.consumer_proc",
    "tests.support.gateway_proc",
    "tests.support.ingest",
    "tests.support.mosquitto",
    "tests.support.postgres",
    "tests.support.powercut",
    "tests.support.store",
    "tests.support.tcp_proxy",
]
