"""ModelSpec: the one description of an embedding model that the rest of the server reads.

A spec is a TOML file (see model/specs/). Built-in specs are looked up by name; any other
spec is a path. Nothing else in the code base knows which model is loaded.
"""

from __future__ import annotations

import importlib
import importlib.resources
import math
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSource(_Strict):
    """Where the model is: a file (a path relative to the spec file, or a package attribute).

    format: "onnx" (onnxruntime, Triton), "torchscript" (a TorchScript file: the PyTorch
    embedder) or "torchvision" (a torchvision `architecture` whose weights, a state dict saved
    with torch.save, are at `path`; `random_weights` instead, for speed tests only)."""

    path: Path | None = None
    python_package: str | None = None
    attribute: str | None = None
    format: Literal["onnx", "torchscript", "torchvision"] = "onnx"
    architecture: str | None = None
    random_weights: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> "ModelSource":
        if self.format == "torchvision":
            if not self.architecture:
                raise ValueError("source.architecture (e.g. resnet50) is required with format torchvision")
            if self.python_package is not None or (self.path is None) != self.random_weights:
                raise ValueError("a torchvision source takes source.path (its weights) or random_weights = true")
            return self
        if self.architecture or self.random_weights:
            raise ValueError("source.architecture and source.random_weights are for format torchvision")
        if (self.path is None) == (self.python_package is None):
            raise ValueError("give exactly one of source.path or source.python_package")
        if self.python_package and not self.attribute:
            raise ValueError("source.attribute is required with source.python_package")
        return self


class ResizePolicy(_Strict):
    # square: resize to size x size (aspect ratio not kept; every image the same shape).
    # short_side: scale so the short side is `size`, keep the aspect ratio.
    mode: Literal["square", "short_side"] = "square"
    size: int = Field(288, ge=32, le=2048)
    # area: OpenCV INTER_AREA whenever shrinking (linear when enlarging).
    # auto: INTER_AREA when shrinking by 2x or more on an axis, else INTER_LINEAR, which below 2x
    #   samples every source pixel anyway and costs a fifth of INTER_AREA's non-integer path.
    interpolation: Literal["area", "auto", "linear", "cubic"] = "area"


class Normalization(_Strict):
    """x' = (x * scale - mean) / std, per channel, for float inputs."""

    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


class InputSpec(_Strict):
    name: str
    layout: Literal["NHWC", "NCHW"]
    dtype: Literal["uint8", "float32", "float16"]
    channels: Literal["RGB", "BGR"] = "RGB"
    resize: ResizePolicy = ResizePolicy()
    # None: the graph normalises by itself (takes raw 0..255 values).
    normalize: Normalization | None = None


class OutputSpec(_Strict):
    name: str
    dim: int = Field(ge=1)
    # When false the runtime L2-normalises, so cosine similarity is a dot product.
    l2_normalized: bool = False


class TailFit(_Strict):
    """How often two unrelated images score at least t, beyond the measured pairs: a
    generalized Pareto tail above `u` (benchmarks/tail.py fits it and prints this table):
    p(t) = share_above * (1 + shape * (t - u) / scale) ** (-1 / shape) for t > u."""

    u: float = Field(ge=-1.0, lt=1.0)
    share_above: float = Field(gt=0.0, le=1.0)  # the share of unrelated pairs above u
    shape: float
    scale: float = Field(gt=0.0)
    measured_on: str = ""  # which photos, how many pairs, when

    def p(self, t: float) -> float:
        """The share of unrelated pairs scoring >= t (for t > u)."""
        if t <= self.u:
            return self.share_above
        z = 1.0 + self.shape * (t - self.u) / self.scale
        if z <= 0.0:
            return 0.0
        if self.shape == 0.0:
            return self.share_above * math.exp(-(t - self.u) / self.scale)
        return self.share_above * z ** (-1.0 / self.shape)

    def threshold_for(self, rate: float) -> float:
        """The smallest t above u with p(t) <= rate (u where the tail's share is already below)."""
        if rate >= self.share_above:
            return self.u
        if self.shape == 0.0:
            return self.u - self.scale * math.log(rate / self.share_above)
        return self.u + self.scale / self.shape * ((rate / self.share_above) ** -self.shape - 1.0)


class KindsSpec(_Strict):
    """Copies and near-duplicates (core/match_modes.py), calibrated on other shots of one scene
    (benchmarks/near_duplicates.py prints this table)."""

    copy_similarity: float = Field(gt=0.0, le=1.0)  # at or above: MATCH_KIND_COPY
    near_duplicate_threshold: float = Field(gt=0.0, le=1.0)  # MATCH_MODE_NEAR_DUPLICATES' base
    measured_on: str = ""  # which images, how many pairs, when


class NormaliseSpec(_Strict):
    """Query-side score normalisation (core/normalise.py, docs/matching.md): a query's term is
    its k-th highest cosine with `background`, unrelated photos of the collection's kind (no
    copies of what it stores); where the operating point has risen above its base, a query's
    threshold is `tail`'s for the namespace's size plus beta times its term. `dedup tail
    --normalise` writes this table and the background beside the spec."""

    background: Path  # an .npy of L2-normalised embeddings (n x dim, float32), relative to the spec's folder
    k: int = Field(1, ge=1)
    beta: float = Field(1.0, gt=0.0, le=2.0)
    tail: TailFit  # of the normalised scores of unrelated pairs (cosine - beta x the query's term)
    typical_term: float = Field(ge=-1.0, le=1.0)  # the median term of unrelated photos: GetInfo's threshold is that query's
    measured_on: str = ""


class SearchSpec(_Strict):
    default_threshold: float = Field(0.75, gt=0.0, le=1.0)
    # The unrelated-pair tail of this model, for a threshold that rises with the number of
    # stored images (core/operating_point.py). None: the threshold stays default_threshold.
    tail: TailFit | None = None
    # None: every match is reported without a kind, and only MATCH_MODE_DUPLICATES is served.
    kinds: KindsSpec | None = None
    # None: the operating point's threshold is the same for every query of a namespace.
    normalise: NormaliseSpec | None = None


class ModelSpec(_Strict):
    name: str
    description: str = ""
    source: ModelSource
    input: InputSpec
    output: OutputSpec
    search: SearchSpec = SearchSpec()
    # The folder of the spec file, for relative source paths.
    base_dir: Path | None = None

    @property
    def input_size(self) -> int:
        return self.input.resize.size

    def resolve(self, path: Path) -> Path:
        """A path the spec names, relative to its folder where it is not absolute."""
        return path if path.is_absolute() or self.base_dir is None else self.base_dir / path

    def model_path(self) -> Path:
        """The model file, resolved (the installed package's own file, never a copy)."""
        if self.source.path is not None:
            return self.resolve(self.source.path)
        module = importlib.import_module(self.source.python_package or "")
        return Path(getattr(module, self.source.attribute or ""))


def builtin_spec_names() -> list[str]:
    files = importlib.resources.files("imgdedup.model_specs")
    return sorted(f.name.removesuffix(".toml") for f in files.iterdir() if f.name.endswith(".toml"))


def spec_text(name_or_path: str | Path) -> tuple[str, Path | None]:
    """A spec's TOML text and the folder it is in (None for a built-in spec): what load_spec
    reads, for a tool that writes a spec of its own from it (dedup tail --spec-out)."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"model spec file not found: {path}")
        return path.read_text(), path.resolve().parent
    resource = importlib.resources.files("imgdedup.model_specs") / f"{name_or_path}.toml"
    if not resource.is_file():
        raise ValueError(
            f"unknown model {name_or_path!r}: give a spec file path or one of {builtin_spec_names()}"
        )
    return resource.read_text(), None


def load_spec(name_or_path: str | Path) -> ModelSpec:
    """Load a built-in spec by name (e.g. "sscd_disc_mixup") or a spec file by path."""
    return parse_spec(*spec_text(name_or_path))


def parse_spec(text: str, folder: Path | None) -> ModelSpec:
    """A spec from its TOML text (spec_text's), relative model paths read from `folder`."""
    data = tomllib.loads(text)
    if folder is not None:
        data.setdefault("base_dir", folder)
    return ModelSpec.model_validate(data)
