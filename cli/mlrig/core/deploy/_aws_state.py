"""What an AWS endpoint serves, as its Pulumi stack's config, and how each verb changes it.

Pure functions: deploy, canary, promote, abort and rollback only move the alias between
published Lambda versions (and publish one when the image changes); none rebuilds. A warm
endpoint (ECS) has no alias: its rollback puts the previous image back by digest (kept in
`previous_serves`), which ECS rolls out like any deploy.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pydantic import BaseModel, Field, ValidationError

from mlrig.errors import ConfigError, UsageError

KEYS = {
    "image": "mlrig:image",
    "stable_version": "mlrig:stableVersion",
    "canary_percent": "mlrig:canaryPercent",
    "previous_version": "mlrig:previousVersion",
    "warm": "mlrig:warm",
    "public": "mlrig:public",
    "model": "mlrig:model",
    "model_version": "mlrig:modelVersion",
    "since": "mlrig:since",
    "stable_serves": "mlrig:stableServes",
    "previous_serves": "mlrig:previousServes",
    "capture": "mlrig:capturePercent",
    "run_id": "mlrig:runId",
}


class Serves(BaseModel, frozen=True):
    """The model version a published Lambda version serves (kept beside its number, so a
    rollback can name what it goes back to)."""

    model: str = Field(max_length=256)
    version: str = Field(pattern=r"^[0-9]{0,10}$")
    # read back from the stack's config: a warm rollback builds an image reference from it
    digest: str = Field(default="", pattern=r"^(sha256:[0-9a-f]{64})?$")

    @classmethod
    def parse(cls, key: str, raw: str | None) -> Serves | None:
        if not raw:
            return None
        try:
            return cls.model_validate_json(raw)
        except ValidationError:
            raise ConfigError(
                f"the endpoint stack's config {key} is not a model version ({raw[:60]!r})",
                hint=f"remove it with `pulumi config rm {key}` in the endpoint's stack, or "
                "deploy the endpoint again",
            ) from None


@dataclass(frozen=True)
class Desired:
    image: str  # ECR repository@sha256: the function's code (a change publishes a version)
    stable_version: str | None = None  # the alias' version; None: the one `image` published
    canary_percent: int | None = None
    previous_version: str | None = None  # what a plain `rollback` re-points the alias to
    warm: bool = False
    public: bool = False
    model: str = ""
    model_version: str = ""
    since: str = ""  # ISO time the alias last changed
    stable_serves: Serves | None = None  # what stable_version serves (when known)
    previous_serves: Serves | None = None  # what previous_version serves (when known)
    capture: int = 0  # percent of predictions the function captures (new versions)
    run_id: str = ""  # the image's model version's run (named by its captured records)

    @property
    def canary(self) -> bool:
        return self.canary_percent is not None

    @property
    def image_serves(self) -> Serves:
        return Serves(
            model=self.model, version=self.model_version, digest=self.image.rsplit("@", 1)[-1]
        )

    @property
    def serving(self) -> Serves | None:
        """What the alias sends (the stable share of) traffic to; None when unknown (an
        endpoint deployed before this was kept)."""
        if self.stable_version is None:
            return self.image_serves if self.model else None
        return self.stable_serves

    def to_config(self) -> tuple[dict[str, str], list[str]]:
        """(settings to write, keys to remove) for the endpoint stack."""
        values = {
            "image": self.image,
            "stable_version": self.stable_version,
            "canary_percent": None if self.canary_percent is None else str(self.canary_percent),
            "previous_version": self.previous_version,
            "warm": "true" if self.warm else "false",
            "public": "true" if self.public else "false",
            "model": self.model,
            "model_version": self.model_version,
            "since": self.since or None,
            "stable_serves": _dump(self.stable_serves),
            "previous_serves": _dump(self.previous_serves),
            "capture": str(self.capture) if self.capture else None,
            "run_id": self.run_id or None,
        }
        settings = {KEYS[k]: v for k, v in values.items() if v is not None}
        return settings, [KEYS[k] for k, v in values.items() if v is None]

    @classmethod
    def from_config(cls, config: dict[str, str]) -> Desired | None:
        """None when the endpoint stack has never been deployed (no image)."""
        get = {k: config.get(key) for k, key in KEYS.items()}
        if not get["image"]:
            return None
        percent = get["canary_percent"]
        return cls(
            image=str(get["image"]),
            stable_version=get["stable_version"],
            canary_percent=int(percent) if percent else None,
            previous_version=get["previous_version"],
            warm=get["warm"] == "true",
            public=get["public"] == "true",
            model=get["model"] or "",
            model_version=_model_version(get["model_version"]),
            since=get["since"] or "",
            stable_serves=Serves.parse(KEYS["stable_serves"], get["stable_serves"]),
            previous_serves=Serves.parse(KEYS["previous_serves"], get["previous_serves"]),
            capture=_percent(get["capture"]),
            run_id=get["run_id"] or "",
        )


def _model_version(raw: str | None) -> str:
    if raw and not (raw.isascii() and raw.isdigit() and len(raw) <= 10):
        raise ConfigError(
            f"the endpoint stack's config {KEYS['model_version']} is {raw[:20]!r}, not a "
            "model version",
            hint="deploy the endpoint again",
        )
    return raw or ""


def _percent(raw: str | None) -> int:
    if not raw:
        return 0
    if not raw.isdigit() or int(raw) > 100:
        raise ConfigError(
            f"the endpoint stack's config {KEYS['capture']} is {raw[:20]!r}, not 0-100",
            hint="deploy the endpoint again with --capture PCT",
        )
    return int(raw)


def _dump(serves: Serves | None) -> str | None:
    return None if serves is None else serves.model_dump_json()


WARM_CANARY = "a warm endpoint has no canary: API Gateway cannot weight its VPC-link route to ECS"
WARM_ROLLOUT = (
    "deploy without --canary: ECS starts the new version beside the old one, sends it "
    "requests once its /ping health check passes, then drains the old one, and rolls back "
    "by itself if the new one never gets healthy; `mlrig deploy rollback NAME` goes back later"
)


def check_warm_canary(warm: bool, canary: int | None) -> None:
    """--warm with --canary: one line, before REF is resolved (which may build and push)."""
    if warm and canary is not None:
        raise UsageError(WARM_CANARY, hint=WARM_ROLLOUT)


def deploy(
    name: str,
    current: Desired | None,
    served: str | None,
    *,
    image: str,
    model: str,
    version: str,
    canary: int | None,
    warm: bool,
    public: bool,
    capture: int | None = None,
    run_id: str = "",
) -> Desired:
    """A new version: served at once, or as a canary beside what `served` is. capture: the
    endpoint's share from now on (None keeps it; a new endpoint's is 0, off)."""
    if current is None:
        if canary is not None:
            raise UsageError(
                f"endpoint {name!r} serves nothing yet: a canary needs a version to compare to",
                hint="deploy without --canary first",
            )
        return Desired(
            image,
            warm=warm,
            public=public,
            model=model,
            model_version=version,
            capture=capture or 0,
            run_id=run_id,
        )
    if current.warm:
        check_warm_canary(True, canary)
    if current.canary:
        raise UsageError(
            f"endpoint {name!r} has a canary ({current.canary_percent}%)",
            hint=f"`mlrig deploy promote {name}` or `mlrig deploy abort {name}` first",
        )
    if current.warm != warm:
        raise UsageError(
            f"endpoint {name!r} is {'warm' if current.warm else 'a Lambda function'}",
            hint="delete it first to change how it runs",
        )
    base = replace(current, image=image, model=model, model_version=version, run_id=run_id)
    base = replace(
        base,
        public=current.public or public,
        capture=current.capture if capture is None else capture,
    )
    if canary is not None:
        if warm:
            raise UsageError("a warm endpoint has no canary yet", hint="deploy without --canary")
        return replace(
            base, stable_version=served, canary_percent=canary, stable_serves=current.serving
        )
    return replace(
        base,
        stable_version=None,
        canary_percent=None,
        previous_version=served,
        stable_serves=None,
        previous_serves=current.serving,
    )


def promote(name: str, current: Desired | None, *, stable: str | None) -> Desired:
    """All traffic to the canary (the version its image published)."""
    if current is None or not current.canary:
        raise UsageError(f"endpoint {name!r} has no canary to promote")
    return replace(
        current,
        stable_version=None,
        canary_percent=None,
        previous_version=stable,
        stable_serves=None,
        previous_serves=current.stable_serves,
    )


def abort(name: str, current: Desired | None) -> Desired:
    """The stable version takes all traffic again; the canary's version stays published."""
    if current is None or not current.canary:
        raise UsageError(f"endpoint {name!r} has no canary to abort")
    return replace(current, canary_percent=None)


def rollback(
    name: str,
    current: Desired | None,
    served: str | None,
    *,
    image: str | None = None,
    model: str = "",
    version: str = "",
    run_id: str = "",
) -> Desired:
    """Back to the previous version (re-point the alias), or to `image` (publishes it)."""
    if current is None:
        raise UsageError(f"no endpoint {name!r} on this stack", hint="see `mlrig deploy list`")
    if current.canary:
        raise UsageError(
            f"endpoint {name!r} has a canary", hint=f"`mlrig deploy abort {name}` instead"
        )
    if image is not None:
        return replace(
            current,
            image=image,
            model=model or current.model,
            model_version=version or current.model_version,
            run_id=run_id,
            stable_version=None,
            previous_version=served,
            stable_serves=None,
            previous_serves=current.serving,
        )
    if current.warm:
        return _warm_rollback(name, current)
    if current.previous_version is None:
        raise UsageError(f"endpoint {name!r} has no previous version", hint="pass --to REF")
    return replace(
        current,
        stable_version=current.previous_version,
        previous_version=served,
        stable_serves=current.previous_serves,
        previous_serves=current.serving,
    )


def _warm_rollback(name: str, current: Desired) -> Desired:
    """The previous image again, by the digest the state kept (same repository)."""
    previous = current.previous_serves
    if previous is None or not previous.digest:
        raise UsageError(f"warm endpoint {name!r} has no previous version", hint="pass --to REF")
    repository = current.image.rsplit("@", 1)[0]
    return replace(
        current,
        image=f"{repository}@{previous.digest}",
        model=previous.model,
        model_version=previous.version,
        run_id="",  # not kept: captures after a warm rollback name the version, not its run
        previous_serves=current.serving,
    )
