"""Talking to models behind Open Inference Protocol (KServe v2) endpoints.

The reference syntax (:mod:`.reference`), this process's settings for requests: credentials,
TLS, retries, traffic (:mod:`.settings`), the protocol's bodies (:mod:`.protocol`), the client
with its retries, rate limit and concurrency (:mod:`.client`) and the ``endpoint`` scoring
engine (:mod:`.engine`). How an endpoint becomes a model spec and a scoring network:
:mod:`fooling.fitness.sources.endpoint`. Knows nothing of archives or runs: the query budget
of a search is the search's (:mod:`fooling.evo.run`).
"""

from __future__ import annotations

from fooling.fitness.endpoint.budget import QueryBudget
from fooling.fitness.endpoint.client import EndpointClient, EndpointError, RateLimiter, RetryableError
from fooling.fitness.endpoint.engine import ENDPOINT_KIND, EndpointEngine, EndpointRunError, EndpointSession
from fooling.fitness.endpoint.protocol import AnswerError, GarbledAnswer, decode_answer, encode_request
from fooling.fitness.endpoint.reference import (
    SCORES,
    EndpointOptions,
    EndpointReference,
    endpoint_reference,
    is_endpoint,
    parse_endpoint,
)
from fooling.fitness.endpoint.settings import (
    TOKEN_VARIABLE,
    EndpointSettings,
    configure_endpoints,
    endpoint_settings,
    parse_header,
)

__all__ = [
    "ENDPOINT_KIND",
    "SCORES",
    "TOKEN_VARIABLE",
    "AnswerError",
    "EndpointClient",
    "EndpointEngine",
    "EndpointError",
    "EndpointOptions",
    "EndpointReference",
    "EndpointRunError",
    "EndpointSession",
    "EndpointSettings",
    "GarbledAnswer",
    "QueryBudget",
    "RateLimiter",
    "RetryableError",
    "configure_endpoints",
    "decode_answer",
    "encode_request",
    "endpoint_reference",
    "endpoint_settings",
    "is_endpoint",
    "parse_endpoint",
    "parse_header",
]
