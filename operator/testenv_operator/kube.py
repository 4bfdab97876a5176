"""A thin async Kubernetes client over ``kr8s.asyncio`` raw API calls.

Only what the operator needs: server-side apply, create-if-absent, get, list, delete, status
patch, pod logs. Objects are plain dicts; the kinds the operator touches are in ``KINDS``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Protocol

from testenv.api import FIELD_MANAGER, GROUP, PLURAL, POOL_PLURAL, VERSION

Obj = dict[str, Any]


@dataclass(frozen=True)
class Kind:
    api_version: str
    plural: str
    namespaced: bool

    @property
    def base(self) -> str:
        return "/api" if "/" not in self.api_version else "/apis"


KINDS: dict[str, Kind] = {
    "Namespace": Kind("v1", "namespaces", False),
    "ResourceQuota": Kind("v1", "resourcequotas", True),
    "LimitRange": Kind("v1", "limitranges", True),
    "Secret": Kind("v1", "secrets", True),
    "ConfigMap": Kind("v1", "configmaps", True),
    "Service": Kind("v1", "services", True),
    "Pod": Kind("v1", "pods", True),
    "Event": Kind("v1", "events", True),
    "Job": Kind("batch/v1", "jobs", True),
    "NetworkPolicy": Kind("networking.k8s.io/v1", "networkpolicies", True),
    "TestEnvironment": Kind(f"{GROUP}/{VERSION}", PLURAL, False),
    "TestEnvironmentPool": Kind(f"{GROUP}/{VERSION}", POOL_PLURAL, False),
}


class KubeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class NotFound(KubeError):
    pass


class Conflict(KubeError):
    pass


class KubeClient(Protocol):
    """What the reconciler needs from Kubernetes (a fake implements it in unit tests)."""

    async def apply(self, obj: Obj) -> Obj: ...
    async def create(self, obj: Obj) -> Obj | None: ...
    async def get(self, kind: str, name: str, namespace: str | None = None) -> Obj | None: ...
    async def list(
        self,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[Obj]: ...
    async def delete(
        self,
        kind: str,
        name: str,
        namespace: str | None = None,
        *,
        preconditions: Obj | None = None,
    ) -> bool: ...
    async def patch_status(
        self, name: str, patch: Obj, *, kind: str = "TestEnvironment"
    ) -> Obj | None: ...
    async def pod_logs(
        self, namespace: str, pod: str, container: str, *, previous: bool, tail: int
    ) -> str: ...


def _path(kind: Kind, name: str | None, namespace: str | None, sub: str | None = None) -> str:
    parts = [kind.base, kind.api_version]
    if kind.namespaced and namespace:
        parts += ["namespaces", namespace]
    parts.append(kind.plural)
    if name:
        parts.append(name)
    if sub:
        parts.append(sub)
    return "/".join(parts)


#: Requests in flight at once. httpx's connection pool matches every queued request against
#: every connection each time one completes: with hundreds queued (a burst of environments)
#: that took most of the operator's CPU (bench/scale.py). Above this, requests wait here.
MAX_CONCURRENT_REQUESTS = 16


class Kube:
    """KubeClient over a kr8s async API object (``await kr8s.asyncio.api()``)."""

    def __init__(self, api: Any, concurrency: int = MAX_CONCURRENT_REQUESTS) -> None:
        self._api = api
        self._slots = asyncio.Semaphore(concurrency)

    @classmethod
    async def connect(cls, concurrency: int = MAX_CONCURRENT_REQUESTS) -> Kube:
        import kr8s.asyncio

        return cls(await kr8s.asyncio.api(), concurrency)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        text: bool = False,
    ) -> Any:
        from kr8s import ServerError

        kwargs: dict[str, Any] = {"params": params or {}}
        if body is not None:
            kwargs["content"] = json.dumps(body)
            kwargs["headers"] = {"Content-Type": content_type}
        base, _, rest = path.lstrip("/").partition("/")
        try:
            async with (
                self._slots,
                self._api.call_api(
                    method, base="/" + base, version="", url=rest, **kwargs
                ) as response,
            ):
                return response.text if text else response.json()
        except ServerError as exc:
            code = exc.response.status_code if exc.response is not None else 0
            message = str(exc)
            if code == 404:
                raise NotFound(code, message) from exc
            if code == 409:
                raise Conflict(code, message) from exc
            raise KubeError(code, message) from exc

    async def apply(self, obj: Obj) -> Obj:
        """Server-side apply (fieldManager testenv-operator, force: the operator owns it)."""
        kind = KINDS[obj["kind"]]
        meta = obj["metadata"]
        path = _path(kind, meta["name"], meta.get("namespace"))
        result: Obj = await self._request(
            "PATCH",
            path,
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
            body=obj,
            content_type="application/apply-patch+yaml",
        )
        return result

    async def create(self, obj: Obj) -> Obj | None:
        """Create; None if it already exists (it is then left untouched)."""
        kind = KINDS[obj["kind"]]
        meta = obj["metadata"]
        try:
            result: Obj = await self._request(
                "POST",
                _path(kind, None, meta.get("namespace")),
                params={"fieldManager": FIELD_MANAGER},
                body=obj,
            )
            return result
        except Conflict:
            return None

    async def get(self, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        try:
            result: Obj = await self._request("GET", _path(KINDS[kind], name, namespace))
            return result
        except NotFound:
            return None

    async def list(
        self,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[Obj]:
        params: dict[str, Any] = {}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        try:
            result = await self._request("GET", _path(KINDS[kind], None, namespace), params=params)
        except NotFound:
            return []
        return list(result.get("items") or [])

    async def delete(
        self,
        kind: str,
        name: str,
        namespace: str | None = None,
        *,
        preconditions: Obj | None = None,
    ) -> bool:
        """Delete (background propagation); False if it was gone. With ``preconditions``
        (uid, resourceVersion) only that version is deleted, else :class:`Conflict`."""
        body: Obj = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        if preconditions:
            body["preconditions"] = preconditions
        try:
            await self._request("DELETE", _path(KINDS[kind], name, namespace), body=body)
            return True
        except NotFound:
            return False

    async def patch_status(
        self, name: str, patch: Obj, *, kind: str = "TestEnvironment"
    ) -> Obj | None:
        try:
            result: Obj = await self._request(
                "PATCH",
                _path(KINDS[kind], name, None, "status"),
                body=patch,
                content_type="application/merge-patch+json",
            )
            return result
        except NotFound:
            return None

    async def pod_logs(
        self, namespace: str, pod: str, container: str, *, previous: bool, tail: int
    ) -> str:
        params: dict[str, Any] = {"container": container, "tailLines": tail}
        if previous:
            params["previous"] = "true"
        try:
            result: str = await self._request(
                "GET", _path(KINDS["Pod"], pod, namespace, "log"), params=params, text=True
            )
            return result
        except KubeError:
            return ""
