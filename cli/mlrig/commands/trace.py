"""`mlrig trace REF`: from an endpoint, image, model version or run back to its run, code and
data."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mlrig.commands.options import JsonOpt, StackOpt
from mlrig.ui import console

if TYPE_CHECKING:
    from rich.console import Console

    from mlrig.core.provenance.record import ProvenanceRecord

PARAMS_SHOWN = 8


def trace(
    ref: Annotated[
        str,
        typer.Argument(
            metavar="REF",
            help="endpoint:NAME (what it serves), an image (name:tag, host/repo@sha256:…, "
            "sha256:…, image ID), models:/NAME/VERSION, models:/NAME@ALIAS, @ALIAS, "
            "models:/m-ID (an MLflow 3 logged model), runs:/ID or a run ID.",
        ),
    ],
    json_out: JsonOpt = False,
    stack: StackOpt = None,
    repo: Annotated[
        Path | None,
        typer.Option(
            help="Git repository to look for the restore point in (default: the one holding "
            "the current directory)."
        ),
    ] = None,
) -> None:
    """Print where REF came from: endpoint ↔ image ↔ model version ↔ run ↔ commit ↔ data."""
    from mlrig.core.deploy import serving

    if serving.is_endpoint_ref(ref):  # deploy sits above provenance: it resolves its form
        record = serving.trace(ref, stack=stack, repo=repo)
    else:
        from mlrig.core.provenance import trace as core

        record = core.trace(ref, stack=stack, repo=repo)
    if json_out:
        typer.echo(record.model_dump_json(indent=2))
    else:
        render(record)
    if record.refused:  # the record is shown, but a tag that was refused fails the command
        raise typer.Exit(1)


def _short(values: dict[str, str] | dict[str, float], limit: int = PARAMS_SHOWN) -> str:
    items = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()]
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return "  ".join(items[:limit]) + more


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class _Printable:
    """A console that prints no control character (a tag's ANSI escapes could rewrite or
    hide the lines around it): each becomes `?`."""

    def __init__(self, out: Console) -> None:
        self.out = out

    def print(self, text: str, **options: Any) -> None:
        self.out.print(_CONTROL.sub("?", text), **options)


def render(record: ProvenanceRecord) -> None:
    """One line per link of the chain, then the data and the restore line."""
    from rich.markup import escape

    rows: list[tuple[str, str]] = []
    if record.endpoint:
        ep = record.endpoint
        public = "  [PUBLIC: no key needed]" if ep.public else ""
        rows.append(
            ("endpoint", f"{escape(ep.name)}  {escape(ep.url or '(no proxy yet)')}{public}")
        )
        for s in ep.serving:
            traced = "  (traced below)" if s.version == ep.traced else ""
            rows.append(
                (
                    "serving",
                    f"{s.traffic:>3}%  {escape(s.model)} v{escape(s.version)}  "
                    f"{escape(s.digest)}  since {s.since.isoformat(timespec='seconds')}{traced}",
                )
            )
    for image in record.images or []:
        rows.append(("image", escape(image.reference or image.digest)))
    if record.model:
        aliases = escape("".join(f"  @{a}" for a in record.model.aliases))
        model = f"{escape(record.model.name)} v{escape(record.model.version)}{aliases}"
        rows.append(("model", model))
    run = record.run
    if run is None:  # an image nothing links to a run: what is known of it, then `missing:`
        rows.append(("run", "[yellow]unknown[/]"))
    else:
        rows.append(("run", f"{run.id}  (experiment {escape(run.experiment or '?')})"))
        if run.recorded_by:
            rows.append(("recorded by", escape(run.recorded_by)))
        if run.params:
            rows.append(("params", escape(_short(run.params))))
        if run.metrics:
            rows.append(("metrics", escape(_short(run.metrics))))
    code = record.code
    changed = escape(", ".join(code.dirty_files) or "yes")
    if not code.dirty:
        dirty = "clean"
    elif code.restorable:
        dirty = f"uncommitted when run: {changed} (the restore point holds them)"
    else:
        dirty = f"[yellow]dirty: {changed}[/]"
    if record.missing:  # no mlrig tags: nothing recorded the workspace's state
        dirty = "[yellow]unknown[/]"
    rows.append(("commit", f"{escape(code.commit or '?')}  {dirty}"))
    if code.source_name:
        rows.append(("source", escape(code.source_name)))
    if code.remote:
        rows.append(("remote", escape(code.remote)))
    if code.exp_name:
        base = f"  baseline {escape(code.exp_baseline[:12])}" if code.exp_baseline else ""
        rows.append(("experiment", f"{escape(code.exp_name)}{base}  {escape(code.exp_ref or '')}"))
    point = code.restore_point
    if point:
        where = f" ({escape(point.ref)})" if point.ref else ""
        rows.append(("restore point", f"{point.sha}{where}, found by {point.found_by}"))
    for name, url in dict.fromkeys((d.remote.name, d.remote.url) for d in record.data if d.remote):
        rows.append(("dvc remote", f"{escape(name)}: {escape(url)}"))
    for item in record.data:
        known = "  (dvc.lock at the commit)" if item.source == "dvc.lock" else ""
        rows.append((f"data {item.role}", f"{escape(item.md5)}  {escape(item.path)}{known}"))
    if record.windows:
        w = record.windows
        rows.append(
            (
                "windows",
                escape(
                    f"train {w.train_from or '?'} .. {w.train_to or '?'}, test {w.test_from or '?'}"
                    f" .. {w.test_to or '?'}, gap {w.gap or '?'} (horizon {w.horizon or '?'}, "
                    f"ttl {w.ttl or '?'})"
                ),
            )
        )
    if record.compute:
        c = record.compute
        spot = ", spot requested" if c.spot != "false" else ""
        wall = f", {c.wall_seconds:.0f} s" if c.wall_seconds is not None else ""
        cost = f", ${c.cost_usd:g}" if c.cost_usd is not None else ""
        rows.append(
            (
                "trained on",
                escape(
                    f"{c.backend} task {c.task[:64]} ({c.cpu / 1024:g} vCPU, "
                    f"{c.memory_mib} MiB{spot}{wall}{cost})"
                ),
            )
        )
    out = _Printable(console())
    width = max(len(key) for key, _ in rows) + 2
    for key, value in rows:  # never folded: references and hashes stay copy-pasteable
        out.print(f"[bold]{key:<{width}}[/]{value}", soft_wrap=True, highlight=False)
    if run is not None and run.recorded_by_repository_identity is False:
        out.print(
            f"[yellow]warning:[/] run {run.id} was recorded by {escape(run.recorded_by or '?')}, "
            f"not by the repository's identity {escape(run.repository_identity or '?')}: "
            "its tags say where it came from, but someone else wrote them",
            soft_wrap=True,
        )
    for line in record.refused:
        out.print(f"[red]refused:[/] {escape(line)}", soft_wrap=True)
    for gap in record.missing:
        out.print(f"[yellow]missing:[/] {escape(gap.link)} — {escape(gap.how)}", soft_wrap=True)
    if record.missing and point and run is not None:
        target = (
            f"models:/{record.model.name}/{record.model.version}"
            if record.model
            else f"runs:/{run.id}"
        )
        out.print(
            f"[yellow]partly restorable:[/] mlrig checkout {escape(target)} (the commit and "
            "the data its dvc.lock records, unverified against the run)",
            soft_wrap=True,
        )
    if record.restore_command:
        out.print(
            f"[green]restorable bit for bit:[/] {escape(record.restore_command)}", soft_wrap=True
        )
    else:
        out.print(
            f"[red]not restorable:[/] {escape(code.reason or 'unknown reason')}", soft_wrap=True
        )
