"""Shared test set-up: where the repo is, and its custom modules for Salt's loader."""

import logging
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root():
    return REPO_ROOT


@pytest.fixture(scope="session")
def salt_factories_config():
    # Keep the factories' log server on loopback like everything else here.
    return {"log_server_host": "127.0.0.1"}


def pytest_sessionfinish(session, exitstatus):
    # Salt's deferred log handlers flush at interpreter exit, after pytest closed the captured
    # streams; without this each such record prints a "--- Logging error ---" traceback.
    logging.raiseExceptions = False
