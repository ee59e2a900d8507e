"""Per-request API metrics: one measured block counts each request once, with the status both APIs report."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.api.metrics import IN_FLIGHT, REQUESTS, RequestObservation
from orchestrator.errors import InvalidRequest, Overloaded


def requests(api: str, status: str) -> float:
    return REQUESTS.labels(api, "test", "none", status)._value.get()


def in_flight(api: str) -> float:
    return IN_FLIGHT.labels(api)._value.get()


@pytest.mark.parametrize(("api", "error", "status"), [
    ("http", None, "200"), ("http", InvalidRequest("max_tokens", "too large"), "400"),
    ("http", RuntimeError("bug"), "500"), ("http", asyncio.CancelledError(), "cancelled"),
    ("grpc", None, "OK"), ("grpc", Overloaded("queue full"), "RESOURCE_EXHAUSTED"),
    ("grpc", RuntimeError("bug"), "INTERNAL"), ("grpc", asyncio.CancelledError(), "CANCELLED"),
])
def test_a_measured_request_is_counted_once_with_its_status(api: str, error: BaseException | None,
                                                           status: str) -> None:
    before, running = requests(api, status), in_flight(api)
    try:
        with RequestObservation(api, "test").measured():
            assert in_flight(api) == running + 1
            if error is not None:
                raise error
    except BaseException as escaped:  # noqa: BLE001 - the error leaves the block unchanged
        assert escaped is error
    assert requests(api, status) == before + 1 and in_flight(api) == running


def test_a_stream_that_goes_on_is_finished_by_whoever_ends_it() -> None:
    before, running = requests("http", "200"), in_flight("http")
    observation = RequestObservation("http", "test")
    with observation.measured(ends_request=False):
        pass
    assert in_flight("http") == running + 1 and requests("http", "200") == before
    with observation.measured():
        pass
    assert in_flight("http") == running and requests("http", "200") == before + 1
