"""Typed errors of the client (`distill.Client`) and the model registry.

Every error carries `message` (the cluster's own words where the cluster said something) and `status` (the HTTP
status of the failed request, when there was one), so callers can branch on the type and show the message.
"""

from __future__ import annotations

import re


class ClientError(Exception):
    """Base of every error the client raises."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.status = status


class ClusterUnreachable(ClientError, ConnectionError):
    """Nothing answers at the address (wrong URL, cluster down, port-forward not running)."""


class Unauthorized(ClientError, PermissionError):
    """The cluster wants a token (Ray token auth) and got none or a wrong one."""


class JobNotFound(ClientError, LookupError):
    """No job with this id on the cluster."""


class JobConflict(ClientError):
    """The job cannot be created as asked: the id is taken, or a live job already writes to the output directory."""


class SpecInvalid(ClientError, ValueError):
    """The spec was refused before any job was created. One line per problem, each naming the field."""


class JobTimeout(ClientError, TimeoutError):
    """`jobs.wait` ran out of time before the job reached a terminal state."""


class ServerError(ClientError):
    """Any other failure the cluster reported (HTTP 5xx, or a 4xx with no more specific type)."""


class ModelNotFound(ClientError, LookupError):
    """No packaged student of that name (or variant) under the artifacts root; the message lists what exists."""


class IntegrityError(ClientError):
    """A downloaded file's sha256 differs from the one recorded in the package manifest."""


_EXC_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*(?:Error|Exception)): (.+)$")
_STATUS = re.compile(r"status code (\d{3})")


def server_message(text: str) -> str:
    """The human part of a Ray dashboard error body.

    The job server answers some failures with a whole Python traceback (sometimes one nested in another); the
    useful part is the last `SomeError: message` line. Plain bodies come back as they are."""
    text = (text or "").strip()
    if "Traceback (most recent call last)" not in text:
        return text.rstrip(".").strip() + "." if text else "no message"
    lines = [m.group(1).strip() for line in text.splitlines() if (m := _EXC_LINE.match(line.strip()))]
    return lines[-1] if lines else text.splitlines()[-1]


def from_response(status: int, body: str) -> ClientError:
    """Map one failed job-server response to a typed error, keeping the server's message."""
    msg = server_message(body)
    # The head proxies to a job agent and wraps the agent's answer: the innermost status says what happened.
    inner = [int(s) for s in _STATUS.findall(body or "")]
    code = inner[-1] if inner else status
    if status == 404 or code == 404 or "does not exist" in msg:
        return JobNotFound(msg, status)
    if status in (401, 403) or code in (401, 403):
        return Unauthorized(msg, status)
    if "already exists" in msg:
        return JobConflict(msg, status)
    return ServerError(msg, status)
