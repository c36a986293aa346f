"""Schemathesis against the live server, driven by the OpenAPI document it serves.

Every operation of ``/openapi.json`` is fuzzed with schema-valid (positive)
and schema-violating (negative) requests, each with no token, the operator
token and a customer's token; half of the generated requests are pointed at
the registered customer so the fuzzing reaches the handlers, not only the id
check. Each answer must not be a 5xx, must have a status, content type,
headers and body the document declares for that operation, and negative
requests must be refused. The document is fetched from the server, so it is
the served contract that is tested, whatever module builds it.

Schemathesis is synchronous (requests), so it runs in a thread while the
reactor serves the in-process server. Failures are collected per operation,
not stopped at the first one, and the totals are printed.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from meterd.taxid import make_cpf
from tests.support import LiveServer, start_server

pytestmark = pytest.mark.slow  # thousands of generated requests: the full suite's, not the fast loop's
schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CID = make_cpf("529982247")
EXAMPLES_PER_RUN = 10  # × each operation × 3 credentials × 2 modes: a few hundred requests
POSITIVE_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance, response_schema_conformance]
NEGATIVE_CHECKS = [*POSITIVE_CHECKS, negative_data_rejection]


@dataclass
class Report:
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: dict[str, str] = field(default_factory=dict)
    operations: list[str] = field(default_factory=list)


@pytest_twisted.async_yield_fixture
async def fuzzed(tmp_path: Any) -> AsyncIterator[tuple[LiveServer, dict[str, str | None]]]:
    server = await start_server(tmp_path / "data")
    status, customer, _ = await server.call("POST", "/cadCliente", json_body={"id": CID, "name": "Ana"})
    assert status == 201
    status, _, _ = await server.call("POST", "/cadMedidor", json_body={"id": CID})
    assert status == 201
    now = int(time.time())
    status, _, _ = await server.call("POST", "/postConsumo", json_body={"id": CID, "id_medidor": 1, "valor": 5, "timestamp": now - 600})
    assert status == 201
    yield server, {"none": None, "operator": server.token, "customer": customer["token"]}
    await server.stop()


def _aim_at_customer(case: Any) -> None:
    """Point the case at the registered customer (and its meter), where it has a place for them."""
    if isinstance(case.body, dict) and "id" in case.body:
        case.body["id"] = CID
    if case.query and "id" in case.query:
        case.query["id"] = CID


def _fuzz(url: str, tokens: dict[str, str | None]) -> Report:
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    report = Report()
    for result in schema.get_all_operations():
        operation = result.ok()
        report.operations.append(operation.label)
        for who, token in tokens.items():
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                checks = POSITIVE_CHECKS if mode is GenerationMode.POSITIVE else NEGATIVE_CHECKS

                @settings(
                    max_examples=EXAMPLES_PER_RUN,
                    deadline=None,
                    database=None,
                    derandomize=True,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=operation.as_strategy(generation_mode=mode), aim=st.booleans())
                def run(case: Any, aim: bool) -> None:
                    if aim and mode is GenerationMode.POSITIVE:  # a negative case must stay invalid
                        _aim_at_customer(case)
                    response = case.call(base_url=url, headers=headers, timeout=10)
                    report.requests += 1
                    report.statuses[response.status_code] += 1
                    case.validate_response(response, checks=checks, headers=headers)

                try:
                    run()
                except Unsatisfiable:
                    assert mode is GenerationMode.NEGATIVE, operation.label  # nothing to negate: no parameters
                except (Exception, BaseExceptionGroup) as e:  # collected, reported together below
                    report.failures[f"{operation.label} [{who}, {mode.value}]"] = f"{type(e).__name__}: {str(e)[:1500]}"
    return report


@pytest_twisted.ensureDeferred
async def test_schemathesis_finds_no_server_error_and_no_schema_violation(fuzzed: tuple[LiveServer, dict[str, str | None]], capsys: pytest.CaptureFixture[str]) -> None:
    server, tokens = fuzzed
    started = time.monotonic()
    report = await deferToThread(_fuzz, server.url, tokens)
    with capsys.disabled():  # the figures belong in CI's output
        print(
            f"\nschemathesis: {len(report.operations)} operations, {report.requests} requests in {time.monotonic() - started:.1f} s; "
            f"statuses {dict(sorted(report.statuses.items()))}; {len(report.failures)} failing runs"
        )
    assert report.requests >= 200
    assert not any(500 <= s < 600 and s != 503 for s in report.statuses), report.statuses
    assert not report.failures, "\n\n".join(f"{k}:\n{v}" for k, v in report.failures.items())
    # every route but /openapi.json itself, which schemathesis leaves out as the schema's own address
    assert set(report.operations) >= {f"{m} {r}" for r, m in (
        ("/cadCliente", "POST"), ("/cadMedidor", "POST"), ("/postConsumo", "POST"), ("/getConsumoHist", "GET"), ("/getFatura", "GET"),
        ("/getAlarme", "GET"), ("/ackAlarme", "POST"), ("/getMedidores", "GET"), ("/health", "GET"), ("/metrics", "GET"))}, report.operations
    # the server survived it all
    status, body, _ = await server.call("GET", "/health")
    assert (status, body["status"]) == (200, "ok")
