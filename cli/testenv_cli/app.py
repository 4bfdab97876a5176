"""The ``testenv`` command: environments by hand, like kubectl and helm (typer; the work is
done by :class:`testenv.Environments`, one ``asyncio.run`` per command)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from testenv import Environments, EnvironmentView, load_spec
from testenv.api import TestEnvironmentSpec

from ._exit import EPILOG, ExitCode, exit_code_for, one_line
from ._output import (
    Output,
    Progress,
    emit,
    environments_table,
    err,
    out,
    status_lines,
    urls,
)

T = TypeVar("T")

app = typer.Typer(
    name="testenv",
    help="Ephemeral test environments on Kubernetes: create, inspect, reach and delete them.",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class _Cluster:
    kubeconfig: str | None = None
    context: str | None = None


OutputOption = Annotated[
    Output, typer.Option("--output", "-o", help="human (default), json or yaml")
]
NameArgument = Annotated[str, typer.Argument(help="the TestEnvironment's name")]


@app.callback()
def _global(
    kubeconfig: Annotated[
        str | None,
        typer.Option(help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)"),
    ] = None,
    context: Annotated[str | None, typer.Option(help="kubeconfig context")] = None,
) -> None:
    _Cluster.kubeconfig, _Cluster.context = kubeconfig, context


def _run(work: Callable[[Environments], Awaitable[T]]) -> T:
    """Connect and run ``work``; any failure becomes one line on stderr and its exit code."""

    async def main() -> T:
        envs = await Environments.connect(_Cluster.kubeconfig, _Cluster.context)
        return await work(envs)

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        err.print("testenv: interrupted")
        raise typer.Exit(ExitCode.INTERRUPTED) from None
    except Exception as exc:
        err.print(f"testenv: error: {one_line(exc)}", markup=False)
        raise typer.Exit(exit_code_for(exc)) from None


def _spec(file: Path | None, ttl: str | None) -> tuple[TestEnvironmentSpec, dict[str, str], str]:
    """The spec (default: the reference stack), its labels, and the name the file gives."""
    try:
        spec, labels = load_spec(file)
        name = ""
        if file is not None:
            import yaml

            doc = yaml.safe_load(file.read_text()) or {}
            if isinstance(doc, dict):
                name = str((doc.get("metadata") or {}).get("name") or "")
        if ttl is not None:
            spec = TestEnvironmentSpec.model_validate({**spec.to_wire(), "ttl": ttl})
    except Exception as exc:
        err.print(f"testenv: error: {one_line(exc)}", markup=False)
        raise typer.Exit(ExitCode.INVALID) from None
    return spec, labels, name


@app.command()
def up(
    name: Annotated[
        str | None, typer.Argument(help="name (default: the file's, else a generated one)")
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file", "-f", help="a TestEnvironment or its spec (default: the reference stack)"
        ),
    ] = None,
    ttl: Annotated[
        str | None, typer.Option(help="how long it lives, e.g. 2h (default: the spec's)")
    ] = None,
    label: Annotated[
        list[str] | None,
        typer.Option("--label", help="KEY=VALUE on the TestEnvironment (repeat it)"),
    ] = None,
    wait: Annotated[bool, typer.Option(help="wait until it is Ready")] = True,
    timeout: Annotated[float, typer.Option(help="seconds to wait for Ready")] = 300.0,
    pool: Annotated[
        bool,
        typer.Option(
            help="without a name, claim a Ready environment of a warm pool with this spec "
            "when there is one"
        ),
    ] = True,
    output: OutputOption = Output.HUMAN,
) -> None:
    """Create an environment, or update an existing one of that name to the spec, then wait
    until it is Ready and print its addresses. Without a name, an environment of a matching
    warm pool (TestEnvironmentPool) is claimed when there is one."""
    spec, labels, file_name = _spec(file, ttl)
    for item in label or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            err.print(f"testenv: error: --label takes KEY=VALUE, got {item!r}", markup=False)
            raise typer.Exit(ExitCode.INVALID)
        labels[key] = value
    chosen = name or file_name or f"env-{secrets.token_hex(3)}"

    async def work(envs: Environments) -> None:
        nonlocal chosen
        claimed = None
        if pool and not (name or file_name):
            claimed = await envs.claim(spec, labels=labels)
            if claimed is None and output is Output.HUMAN:
                for pool_name, counts in await envs.pools(spec):
                    err.print(
                        f"testenv: pool {pool_name} has no environment to claim (ready "
                        f"{counts.ready}, refilling {counts.refilling}); creating one",
                        markup=False,
                    )
        if claimed is not None:
            chosen, pool_name = claimed
            view = await envs.get(chosen)
            if output is Output.HUMAN:
                err.print(f"testenv: claimed TestEnvironment {chosen} from pool {pool_name}")
        else:
            view, created = await envs.apply(chosen, spec, labels=labels)
            if output is Output.HUMAN:
                verb = "created" if created else "updated"
                err.print(f"testenv: {verb} TestEnvironment {chosen}")
        if not wait:
            if output is not Output.HUMAN:
                emit(view.to_wire(), output)
            return
        progress = Progress(chosen) if output is Output.HUMAN else None
        try:
            await envs.wait(chosen, timeout=timeout, on_status=progress)
        finally:
            if progress is not None:
                progress.stop()
        view = await envs.get(chosen)
        records = await envs.discovery(chosen)
        if output is not Output.HUMAN:
            data = view.to_wire()
            data["services"] = {n: r.to_wire() for n, r in records.items()}
            emit(data, output)
            return
        out.print(f"{chosen} is Ready in namespace {view.namespace}")
        for service, address in urls(records):
            out.print(f"  {service:<20} {address}")
        out.print(f"reach them from here: testenv forward {chosen}")
        out.print(f"delete it:            testenv down {chosen}")

    _run(work)


@app.command("ls")
def ls(
    selector: Annotated[
        str | None, typer.Option("--selector", "-l", help="label selector, e.g. pr=42")
    ] = None,
    output: OutputOption = Output.HUMAN,
) -> None:
    """List environments."""

    async def work(envs: Environments) -> None:
        views = await envs.list(selector)
        if output is not Output.HUMAN:
            emit([v.to_wire() for v in views], output)
        elif not views:
            err.print("no TestEnvironments")
        else:
            out.print(environments_table(views))

    _run(work)


@app.command()
def status(name: NameArgument, output: OutputOption = Output.HUMAN) -> None:
    """Phase, conditions, per-service readiness and timings, and recent events. Exits 1 if the
    environment is Failed."""

    async def work(envs: Environments) -> EnvironmentView:
        view = await envs.get(name)
        events = await envs.events(name)
        if output is not Output.HUMAN:
            emit({**view.to_wire(), "events": events}, output)
        else:
            for line in status_lines(view, events):
                out.print(line, markup=False)
        return view

    view = _run(work)
    if view.phase == "Failed":
        raise typer.Exit(ExitCode.FAILED)


@app.command()
def forward(name: NameArgument, output: OutputOption = Output.HUMAN) -> None:
    """Forward every port of every service to free local ports and keep them open until
    interrupted (Ctrl-C or SIGTERM). New connections go to a ready pod, so forwards survive
    pod restarts."""

    async def work(envs: Environments) -> None:
        forwards = await envs.forward(name)
        records = {n: f.record() for n, f in forwards.items()}
        if output is not Output.HUMAN:
            emit({n: r.to_wire() for n, r in records.items()}, output)
        else:
            out.print(f"forwarding {name} (Ctrl-C to stop):")
            for service, address in urls(records):
                out.print(f"  {service:<20} {address}")
        sys.stdout.flush()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            for f in forwards.values():
                with contextlib.suppress(Exception):
                    await f.stop()
        err.print("testenv: forwards stopped")

    _run(work)


@app.command()
def logs(
    name: NameArgument,
    service: Annotated[str | None, typer.Argument(help="one service (default: all)")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep following")] = False,
    tail: Annotated[int | None, typer.Option(help="lines per pod from the end")] = None,
) -> None:
    """Logs of the environment's pods, each line prefixed with its pod."""

    async def work(envs: Environments) -> None:
        async for pod, line in envs.logs(name, service, follow=follow, tail=tail):
            print(f"[{pod}] {line}", flush=True)

    _run(work)


@app.command()
def extend(
    name: NameArgument,
    ttl: Annotated[str, typer.Option(help="how long from now, e.g. 2h")],
    output: OutputOption = Output.HUMAN,
) -> None:
    """Let an environment live TTL from now."""

    async def work(envs: Environments) -> tuple[str, str]:
        return await envs.extend(name, ttl)

    new_ttl, expires = _run(work)
    if output is not Output.HUMAN:
        emit({"name": name, "ttl": new_ttl, "expiresAt": expires}, output)
    else:
        out.print(f"{name} lives until {expires} (spec.ttl {new_ttl})", markup=False)


@app.command()
def down(
    name: NameArgument,
    wait: Annotated[bool, typer.Option(help="wait until it and its namespace are gone")] = True,
    timeout: Annotated[float, typer.Option(help="seconds to wait")] = 180.0,
) -> None:
    """Delete an environment and (by default) wait until it and its namespace are gone."""

    async def work(envs: Environments) -> str:
        return await envs.delete(name, wait=wait, timeout=timeout)

    line = _run(work)
    err.print(line, markup=False)
    if "WARNING" in line:
        raise typer.Exit(ExitCode.TIMEOUT)


@app.command()
def gc(
    dry_run: Annotated[bool, typer.Option(help="only say what would be removed")] = False,
    output: OutputOption = Output.HUMAN,
) -> None:
    """Remove expired environments and namespaces whose environment is gone."""

    async def work(envs: Environments) -> list[str]:
        return await envs.gc(dry_run=dry_run)

    removed = _run(work)
    if output is not Output.HUMAN:
        emit({"removed": removed, "dryRun": dry_run}, output)
        return
    verb = "would remove" if dry_run else "removed"
    for line in removed:
        out.print(f"{verb} {line}", markup=False)
    if not removed:
        err.print("nothing to remove")


def main() -> Any:
    """Console script entry point."""
    return app()
