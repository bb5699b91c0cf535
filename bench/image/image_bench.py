"""Serving-image benchmark: `mlrig image build` / `push` vs `bentoml build` + `containerize` vs
MLflow's Dockerfile build, on the same model (breast-cancer LogisticRegression pipeline) and the
same offline base. Every timing is a whole command in a fresh process, the way users run it,
interleaved sample by sample in one run: rebuild after a new model version (the headline),
push of that version, cold builds; plus bytes moved per version, image size and serving.
Run: .venv/bin/python bench/image/image_bench.py [--samples 5] [--quick] [--no-bentoml]
`--flavors` instead records each model flavor's image size (`flavors`, results image-flavors-*).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: common
from builds import (
    alternate,
    bentoml_build,
    docker,
    docker_push,
    manifest,
    mlflow_build,
    mlrig_build,
    mlrig_build_in_process,
    mlrig_push,
    new_bytes,
    stand_in,
)
from common import (
    IN_PROCESS,
    WHOLE,
    WHOLE_INTERLEAVED,
    fresh_home,
    interleave,
    machine,
    markdown,
    record,
    row,
    tear_down,
    utc_stamp,
)
from flavors import flavor_rows
from serving import serving_rows
from workspace import (
    BENTO_PORT,
    BENTOML_VERSION,
    BYTES,
    COLD,
    COMMIT,
    INSPECT,
    MANIFESTS,
    MODEL,
    PUSH,
    PUSH_TWO,
    RATIO,
    REBUILD,
    REF_PORT,
    TOOLS,
    Bench,
    bento_save,
    bentoml_project,
    bentoml_venv,
    cleanup,
    log,
    model_bytes,
    register,
    setup,
)


# -- the run ----------------------------------------------------------------------------------
def run(b: Bench, args: argparse.Namespace) -> dict[str, Any]:
    tools = ["mlrig"] + ([] if args.no_bentoml else ["bentoml"]) + ["mlflow"]
    if "bentoml" in tools:
        b.bento_exe = bentoml_venv(args.bentoml_venv)
        bento_base = "mlrig-bench/bentoml-base:py3.11"
        # uv inside BentoML's build reads SSL_CERT_FILE to trust this machine's TLS proxy
        stand_in(b, bento_base, "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt\n")
        bentoml_project(b, bento_base)

    versions: list[str] = []
    cs: list[float] = []
    request: dict[str, Any] = {}  # the one-row request and the host's answer to it

    def new_version(c: float) -> str:
        version, request["body"], request["expected"] = register(c)
        if "bentoml" in tools:
            bento_save(b, c)
        versions.append(version)
        cs.append(c)
        return version

    def ref(tool: str, version: str) -> str:
        return f"mlrig-bench/{tool}:v{version}"

    builders: dict[str, Callable[[str, bool], float]] = {
        "mlrig": lambda v, nc: mlrig_build(b, v, b.tagged(ref("mlrig", v)), nc),
        "bentoml": lambda v, nc: bentoml_build(b, b.tagged(ref("bentoml", v)), nc),
        "mlflow": lambda v, nc: mlflow_build(b, v, b.tagged(ref("mlflow", v)), nc),
    }
    rows: list[dict[str, Any]] = []

    first = new_version(1.0)
    log(f"{'cold builds (--no-cache)' if args.cold else 'first builds (cache kept)'}: {tools}")
    firsts = {t: builders[t](first, args.cold) for t in tools}
    cold = [row(COLD, TOOLS[t], [firsts[t]], method=WHOLE) for t in tools]
    cold += b.part_rows(COLD, WHOLE)

    log(f"rebuilds after a new model version: {args.samples} samples, interleaved")
    inproc: list[str] = []

    def before(i: int) -> None:
        c = round(0.05 + 0.2 * (i + 1), 3)  # the same pipeline, another C
        new_version(c)
        if args.in_process:
            inproc.append(register(c)[0])  # its own new version (a built one would be cached)

    contenders: dict[str, Callable[[int], float]] = {
        t: (lambda i, t=t: builders[t](versions[i + 1], False)) for t in tools
    }
    if args.in_process:
        contenders["in-process"] = lambda i: mlrig_build_in_process(
            inproc[i], b.tagged(ref("mlrig-inproc", inproc[i]))
        )
    rebuilt = interleave(contenders, args.samples, before=before)
    rows += [row(REBUILD, TOOLS[t], rebuilt[t]) for t in tools]
    rows += b.part_rows(REBUILD, WHOLE_INTERLEAVED)
    if args.in_process:
        rows.append(
            row(
                REBUILD,
                "mlrig: image.build() in the bench's process",
                rebuilt["in-process"],
                method=IN_PROCESS,
            )
        )
    rows += cold if args.cold else []  # after the headline

    log("pushes: mlrig image push vs docker push of the same image, interleaved")
    mlrig_push(b, ref("mlrig", first))  # the earlier version both repositories already hold
    docker_push(b, ref("mlrig", first), "docker-push", f"{MODEL}-v{first}")
    pushed = alternate(
        {
            "mlrig": lambda i: mlrig_push(b, ref("mlrig", versions[i + 1])),
            "docker": lambda i: docker_push(
                b, ref("mlrig", versions[i + 1]), "docker-push", f"{MODEL}-v{versions[i + 1]}"
            ),
        },
        args.samples,
    )
    rows.append(row(PUSH, "mlrig image push (checks tags, verifies the digest)", pushed["mlrig"]))
    rows.append(row(PUSH, "docker push (same image, second repository)", pushed["docker"]))

    # a version trained in a git repository: mlrig names it <model>-v<N> and
    # <model>-v<N>-<commit>; the same two names with docker are two pushes
    log(f"two-tag pushes: {args.samples} versions whose runs name a commit (builds untimed)")
    twos = []
    for i in range(args.samples):
        version = register(round(0.07 + 0.2 * (i + 1), 3), commit=COMMIT)[0]
        mlrig_build(b, version, b.tagged(ref("mlrig", version)), False)
        twos.append(version)
    two_tags = [f"{MODEL}-v{{}}", f"{MODEL}-v{{}}-{COMMIT[:7]}"]
    pushed_two = alternate(
        {
            "mlrig": lambda i: mlrig_push(b, ref("mlrig", twos[i])),
            "docker": lambda i: sum(
                docker_push(b, ref("mlrig", twos[i]), "docker-push", t.format(twos[i]))
                for t in two_tags
            ),
        },
        args.samples,
    )
    rows.append(row(PUSH_TWO, "mlrig image push (both tags, each read back)", pushed_two["mlrig"]))
    rows.append(
        row(PUSH_TWO, "docker push of each tag (two commands, summed)", pushed_two["docker"])
    )

    log("bytes moved per version")
    for version in versions:  # mlrig's own pushes of every version are in its repository
        b.tagged(f"{b.registry}/{b.repository}:{MODEL}-v{version}")
    model_kb = [model_bytes(v) / 1e3 for v in versions]
    moved: dict[str, list[float]] = {
        "mlrig": new_bytes([manifest(b, b.repository, f"{MODEL}-v{v}") for v in versions])
    }
    for t in tools[1:] if args.reference_bytes else []:  # pushed the same way, untimed
        for v in versions:
            remote = b.tagged(f"{b.registry}/bench-{t}:v{v}")
            docker(b, "tag", ref(t, v), remote)
            docker(b, "push", remote)
        moved[t] = new_bytes([manifest(b, f"bench-{t}", f"v{v}") for v in versions])
    for t in moved:
        rows.append(row(BYTES, TOOLS[t], [x / 1e3 for x in moved[t]], unit="kB", method=MANIFESTS))
    ratios = [x / 1e3 / kb for x, kb in zip(moved["mlrig"], model_kb[1:], strict=True)]
    rows.append(row(RATIO, "mlrig image build + push", ratios, unit="x", method=MANIFESTS))

    last = {t: ref(t, versions[-1]) for t in tools}
    for t in tools:
        info = json.loads(docker(b, "image", "inspect", last[t]))[0]
        rows.append(row("image size", TOOLS[t], [info["Size"] / 1e6], unit="MB", method=INSPECT))
        rows.append(
            row("layers", TOOLS[t], [float(len(info["RootFS"]["Layers"]))], unit="", method=INSPECT)
        )

    if args.serving:
        rows += serving_rows(b, last, request["body"], request["expected"], args)

    med = statistics.median

    def verdict(goal: str, got: dict[str, list[float]], rival: str, name: str) -> str:
        """mlrig's median seconds in `got` against the rival's, and whether the goal is met."""
        mine, theirs = med(got["mlrig"]), med(got[rival])
        ok = "met" if mine <= theirs else "NOT met"
        return f"{goal}: {mine:.2f} s vs {name} {theirs:.2f} s (median): {ok}"

    summary = []
    if "bentoml" in tools:
        goal = "goal `mlrig image build` <= `bentoml build` + `bentoml containerize`"
        summary.append(verdict(goal, rebuilt, "bentoml", "BentoML"))
    summary += [
        f"goal a new version moves <= 1.5x the model's bytes: {max(moved['mlrig']) / 1e3:.1f} kB "
        f"for a {model_kb[-1]:.0f} kB model, at most {max(ratios):.2f}x: "
        + ("met" if max(ratios) <= 1.5 else "NOT met"),
        verdict(
            "goal `mlrig image push` <= `docker push` of the same image (one tag each)",
            pushed,
            "docker",
            "docker push",
        ),
        verdict(
            "under two tags: `mlrig image push` <= `docker push` of each",
            pushed_two,
            "docker",
            "two docker pushes",
        ),
        "MLflow: `mlflow models build-docker` runs `docker build` with no network option and "
        "this engine's bridge network has no DNS, so its row is `mlflow models "
        "generate-dockerfile` + that `docker build` with `--network host`, both whole commands",
    ]
    return {
        "rows": rows,
        "summary": summary,
        "model_versions": versions,
        "two_tag_versions": twos,
        "in_process_versions": inproc,
        "c": cs,
        "model_kb": model_kb,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--samples", type=int, default=5, help="rebuild and push samples")
    parser.add_argument("--starts", type=int, default=5, help="cold starts per image")
    parser.add_argument("--requests", type=int, default=2000, help="latency requests")
    parser.add_argument("--seconds", type=float, default=10.0, help="throughput seconds")
    parser.add_argument(
        "--no-cold",
        dest="cold",
        action="store_false",
        help="first builds keep the cache and are not reported",
    )
    parser.add_argument("--no-serving", dest="serving", action="store_false")
    parser.add_argument("--no-in-process", dest="in_process", action="store_false")
    parser.add_argument("--no-bentoml", action="store_true", help="leave BentoML out")
    parser.add_argument(
        "--flavors",
        action="store_true",
        help="only the image size of each model flavor (flavors.py): records image-flavors-*",
    )
    parser.add_argument(
        "--no-as-pinned",
        dest="as_pinned",
        action="store_false",
        help="with --flavors: skip the xgboost build with its CUDA wheel (~1.1 GB)",
    )
    parser.add_argument(
        "--no-reference-bytes",
        dest="reference_bytes",
        action="store_false",
        help="count bytes moved for mlrig only (the references' first push is ~1.2 GB each)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a development run: 2 samples, no cold builds, no reference bytes, 1 start, "
        "300 requests, 2 s",
    )
    parser.add_argument(
        "--bentoml-venv", type=Path, default=Path.home() / ".cache" / "mlrig-bench" / "bentoml-venv"
    )
    args = parser.parse_args()
    if args.quick:
        args.samples, args.starts, args.requests, args.seconds = 2, 1, 300, 2.0
        args.cold = args.reference_bytes = False
    if args.serving and not args.flavors:
        from mlrig.core.stack.local.stack import port_is_free

        for port in (REF_PORT, 8000) + (() if args.no_bentoml else (BENTO_PORT,)):
            if not port_is_free(port):
                raise SystemExit(f"port {port} must be free (a reference image listens on it)")
    from mlrig.core.setup import engine
    from mlrig.version import __version__

    packages = ("xgboost-cpu", "lightgbm") if args.flavors else ()
    meta = machine(("mlflow", "scikit-learn", "docker", *packages)) | {
        "settings": {k: str(v) for k, v in vars(args).items()}
    }
    if not args.no_bentoml and not args.flavors:
        meta["versions"]["bentoml"] = BENTOML_VERSION
    meta["versions"]["docker_cli"] = subprocess.run(
        ["docker", "version", "-f", "{{.Client.Version}}"], capture_output=True, text=True
    ).stdout.strip()
    meta["versions"]["mlrig"] = __version__
    home, env = fresh_home("mlrig-image-bench-")
    os.environ["MLRIG_HOME"] = env["MLRIG_HOME"]
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # the bench's own downloads
    base = engine.ensure_base_image(log)
    meta["base_image"] = base
    b: Bench | None = None
    try:
        b = setup(home, env, base)
        if args.flavors:
            rows, summary = flavor_rows(b, args.as_pinned)
            result: dict[str, Any] = {"rows": rows, "summary": summary}
        else:
            result = run(b, args)
    finally:
        if b is not None:
            cleanup(b)
        tear_down(home, env)
    meta["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    rows = result.pop("rows")
    table = markdown(rows) + "\n\n" + "".join(f"- {s}\n" for s in result["summary"])
    print(table)
    print(
        (f"model artifacts: {result['model_kb'][-1]:.0f} kB; " if "model_kb" in result else "")
        + f"CPUs: {meta['cpus']}; load average at the start {meta['load_avg']}, at the end "
        f"{meta['load_avg_after']}"
    )
    stem = "image-flavors" if args.flavors else "image"
    record(f"{stem}-{utc_stamp()}", {"meta": meta, "rows": rows, **result}, table)


if __name__ == "__main__":
    main()
