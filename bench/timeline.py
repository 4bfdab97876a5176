"""Where one TestEnvironment's time goes, as a client watching it sees it, to the millisecond.

The product's status has per-step timings, but they come from Kubernetes timestamps, which
are whole seconds. :class:`Timeline` watches the environment and its pods from before the
environment is created (both watches are established first) and notes when each step is
first seen, on the same clock as the round's own timing:

- the TestEnvironment exists; the first and the last of its pods exist (the operator's API
  writes: the operator creates them itself);
- the last pod is scheduled; its sandbox and network are ready (the kubelet's
  ``PodReadyToStartContainers`` condition; where a cluster does not report it, or reports it
  with the containers running, the same time as the next step); its containers run
  (container start);
- the last pod is Ready (the service's own start-up and its first successful probe);
- the environment is Ready (the operator noticing it, discovery published, the status
  written).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import kr8s.asyncio

from testenv.api import ENVIRONMENT_LABEL, GROUP, PLURAL, VERSION

#: How long the end of a round waits for steps still on their way (:meth:`Timeline.__exit__`).
COMPLETION_WAIT_S = 10.0

STEPS = (
    "TestEnvironment created",
    "first pod created",
    "last pod created",
    "last pod scheduled",
    "last pod's sandbox and network ready",
    "last pod's containers running",
    "last pod Ready",
    "TestEnvironment Ready",
)


def _condition(obj: dict[str, Any], kind: str) -> bool:
    return any(
        c.get("type") == kind and c.get("status") == "True"
        for c in (obj.get("status") or {}).get("conditions") or []
    )


class Timeline:
    """``with Timeline(name, pods) as tl: tl.start(); ...create, wait...``; then ``tl.seen``
    maps each step of :data:`STEPS` seen to its seconds since :meth:`start`. ``pods``: how
    many pods the environment has once started."""

    def __init__(self, name: str, pods: int) -> None:
        self.name = name
        self.pods = pods
        self.t0 = time.perf_counter()
        self.seen: dict[str, float] = {}
        self._per_pod: dict[str, dict[str, float]] = {}
        self._loop = asyncio.new_event_loop()
        self._watching = threading.Event()
        #: Every step seen (the round's end waits for it, see :meth:`__exit__`).
        self.complete = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._failure: BaseException | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def __enter__(self) -> Timeline:
        self._thread.start()
        if not self._watching.wait(30):
            raise RuntimeError(f"timeline: the watches did not start ({self._failure})")
        return self

    def __exit__(self, *exc: object) -> None:
        # The round ended on one stream (the TestEnvironment Ready); the other may still be
        # delivering the pods' last steps, which had happened by then: wait for them, a
        # bounded time, or a round's median would lack them (and the medians of the steps
        # over rounds would mix rounds, out of order).
        if exc[0] is None:
            self.complete.wait(COMPLETION_WAIT_S)

        def cancel() -> None:
            for task in self._tasks:
                task.cancel()

        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(cancel)
        self._thread.join(10)

    def steps(self) -> dict[str, float]:
        """The steps seen, each at most the next one's time (:data:`STEPS` order). The pods
        and the TestEnvironment come on two watch streams, delivered independently: on a
        busy machine a pod's change can arrive after a later step seen on the other stream
        (the TestEnvironment Ready, which the operator writes only once every pod is Ready).
        Each step follows the previous one, so by the next step's time it had happened."""
        out: dict[str, float] = {}
        bound = float("inf")
        for step in reversed(STEPS):
            if step in self.seen:
                bound = min(bound, self.seen[step])
                out[step] = bound
        return {step: out[step] for step in STEPS if step in out}

    def start(self) -> None:
        """The round starts now: steps are seconds since this call."""
        self.t0 = time.perf_counter()

    def _note(self, step: str) -> None:
        self.seen.setdefault(step, round(time.perf_counter() - self.t0, 3))
        self._check_complete()

    def _check_complete(self) -> None:
        if len(self.seen) == len(STEPS):
            self.complete.set()

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._watch())
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # reported by __enter__ when before the watches
            self._failure = exc
            self._watching.set()
        finally:
            self._loop.close()

    async def _watch(self) -> None:
        api = await kr8s.asyncio.api()
        started = asyncio.Event()
        opened = 0

        async def stream(version: str, base: str, url: str, params: dict[str, str]) -> None:
            nonlocal opened
            async with api.call_api(
                "GET",
                version=version,
                base=base,
                url=url,
                params={"watch": "true", **params},
                stream=True,
                timeout=None,
            ) as response:
                opened += 1
                if opened == 2:
                    started.set()
                async for line in response.aiter_lines():
                    if line:
                        self._event(json.loads(line)["object"])

        self._tasks = tasks = [
            asyncio.create_task(
                stream(
                    f"{GROUP}/{VERSION}",
                    "/apis",
                    PLURAL,
                    {"fieldSelector": f"metadata.name={self.name}"},
                )
            ),
            asyncio.create_task(
                stream("v1", "/api", "pods", {"labelSelector": f"{ENVIRONMENT_LABEL}={self.name}"})
            ),
        ]
        waiting = asyncio.create_task(started.wait())
        await asyncio.wait([waiting, *tasks], return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        for task in tasks:
            if task.done():
                task.result()  # a watch that failed to open: raise its error
        self._watching.set()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _event(self, obj: dict[str, Any]) -> None:
        if obj.get("kind") == "TestEnvironment":
            self._note("TestEnvironment created")
            if _condition(obj, "Ready"):
                self._note("TestEnvironment Ready")
            return
        name = str((obj.get("metadata") or {}).get("name"))
        pod = self._per_pod.setdefault(name, {})
        now = round(time.perf_counter() - self.t0, 3)
        pod.setdefault("created", now)
        if (obj.get("spec") or {}).get("nodeName"):
            pod.setdefault("scheduled", now)
        statuses = (obj.get("status") or {}).get("containerStatuses") or []
        running = bool(statuses) and all("running" in (s.get("state") or {}) for s in statuses)
        if running or _condition(obj, "PodReadyToStartContainers"):
            pod.setdefault("sandbox", now)
        if running:
            pod.setdefault("running", now)
        if _condition(obj, "Ready"):
            pod.setdefault("ready", now)
        self.seen.setdefault("first pod created", now)
        for key, step in (
            ("created", "last pod created"),
            ("scheduled", "last pod scheduled"),
            ("sandbox", "last pod's sandbox and network ready"),
            ("running", "last pod's containers running"),
            ("ready", "last pod Ready"),
        ):
            times = [p[key] for p in self._per_pod.values() if key in p]
            if len(times) >= self.pods:
                self.seen.setdefault(step, max(times))
        self._check_complete()
