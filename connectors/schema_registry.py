"""A schema registry client for Avro input: `GET /schemas/ids/{id}`, the route of Confluent's
Schema Registry REST API (Redpanda's and Apicurio's compatible APIs serve the same), with basic
auth and a CA file for TLS. Schemas are cached per id.

At start, `check` asks for `GET /subjects`: a registry that cannot be reached stops the run with
one line. During a run, a failed request (connection, timeout, 5xx) is retried with backoff until
it succeeds: a record is never dropped for want of its schema. A 404 means the id is unknown
(the decoder makes that a dead letter `unknown_schema`).
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from schemas.errors import ConfigError

_log = logging.getLogger("flowkeeper.schema_registry")


class RegistryUnavailable(Exception):
    """One request failed in a way worth retrying."""


class SchemaRegistry:
    """Avro schemas by id from a registry at `url` (see the module docstring)."""

    def __init__(self, url: str, username: str | None = None, password: str | None = None,
                 ca_file: Path | None = None, timeout_s: float = 10.0,
                 sleep: Callable[[float], None] = time.sleep, max_backoff_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Accept": "application/vnd.schemaregistry.v1+json, application/json"}
        if username is not None:
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"
        self.context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        self.timeout_s, self.sleep, self.max_backoff_s = timeout_s, sleep, max_backoff_s
        self.cache: dict[int, dict[str, Any]] = {}
        self.requests = 0

    def check(self) -> None:
        """Stop with one clear line when the registry cannot be reached or refuses us."""
        try:
            self._get("/subjects")
        except (RegistryUnavailable, LookupError) as e:
            raise ConfigError(f"the schema registry at {self.url} cannot be used: {e}; check "
                              "--schema-registry-url, its credentials and --schema-registry-ca"
                              ) from e

    def schema(self, schema_id: int) -> dict[str, Any] | None:
        """The Avro schema of an id (None: the registry does not know it); retried with backoff
        while the registry is unavailable."""
        found = self.cache.get(schema_id)
        if found is not None:
            return found
        backoff = 0.1
        while True:
            try:
                answer = self._get(f"/schemas/ids/{schema_id}")
                break
            except LookupError:
                return None
            except RegistryUnavailable as e:
                _log.warning("schema registry %s: %s; retrying in %.1f s", self.url, e, backoff)
                self.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
        if not isinstance(answer, dict) or answer.get("schemaType", "AVRO") != "AVRO":
            return None  # a Protobuf or JSON Schema id: not Avro
        try:
            schema = json.loads(answer["schema"])
        except (KeyError, TypeError, ValueError):
            return None
        parsed: dict[str, Any] = schema if isinstance(schema, dict) else {"type": schema}
        self.cache[schema_id] = parsed
        return parsed

    def _get(self, path: str) -> Any:
        """The JSON answer; LookupError for a 404, `RegistryUnavailable` for anything else."""
        self.requests += 1
        request = urllib.request.Request(self.url + path, headers=self.headers)
        try:
            # The URL is the user's own setting (--schema-registry-url).
            with urllib.request.urlopen(request, timeout=self.timeout_s,
                                        context=self.context) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            if e.code == 404:
                raise LookupError(f"{path}: not found") from e
            raise RegistryUnavailable(f"HTTP {e.code} {e.reason} for {path}") from e
        except (urllib.error.URLError, TimeoutError, OSError, ValueError) as e:
            raise RegistryUnavailable(f"{type(e).__name__}: {e}") from e
