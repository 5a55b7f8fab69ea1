"""What the model is fed for one image: its header vetted (probe_image), the image decoded and
resized, then its extra view (if any), resized too. A pure function of the bytes and the
settings, so that it can run in this process or in a decoding process of its own
(core/decoding.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from imgdedup.core.images import ImageFacts, decode_image, preprocess, probe_image
from imgdedup.core.views import extra_view
from imgdedup.runtime.spec import ModelSpec, ResizePolicy


class ModelInputs(NamedTuple):
    tensors: list[np.ndarray]  # the whole image, then its extra view (if any)
    inset: bool  # that view is an inset view (core/views.py: ExtraView)


@dataclass(frozen=True, slots=True)
class InputMaker:
    """Vet, decode, resize and find the extra view of an image; picklable (plain settings only)."""

    max_pixels: int
    input_size: int
    resize: ResizePolicy
    content_views: bool
    inset_views: bool

    @classmethod
    def of(cls, settings, spec: ModelSpec) -> InputMaker:
        return cls(settings.max_pixels, spec.input_size, spec.input.resize, settings.content_views, settings.inset_views)

    def __call__(self, data: bytes, facts: ImageFacts | None = None, *, decode: bool = True) -> tuple[ImageFacts, ModelInputs | None]:
        """(header facts, model inputs): the header probed unless `facts` are given (ImageError
        if it is refused), the inputs made unless `decode` is false (None then)."""
        if facts is None:
            facts = probe_image(data, max_pixels=self.max_pixels)
        return facts, self._inputs(data, facts) if decode else None

    def _inputs(self, data: bytes, facts: ImageFacts) -> ModelInputs:
        decoded = decode_image(data, max_pixels=self.max_pixels, target_size=self.input_size, facts=facts)
        tensors = [preprocess(decoded, self.resize)]
        view = extra_view(decoded, facts, content=self.content_views, insets=self.inset_views)
        if view is not None:
            tensors.append(preprocess(view.image, self.resize))
        return ModelInputs(tensors, inset=view is not None and view.inset)
