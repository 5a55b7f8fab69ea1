"""In-process embedding with PyTorch (the `torch` extra): TorchScript files (Meta publishes SSCD
as TorchScript) and torchvision architectures with a weights file, on CUDA or the CPU.

The server hands over uint8 NHWC batches; they travel to the device as uint8 (a quarter of the
bytes of float32) and become the graph's input there: `UInt8Input` wraps the model with the
spec's channel order, layout, dtype and normalisation, and L2-normalises the output. On CUDA the
model runs in fp16 with channels-last memory by default; `compile` adds torch.compile.
The export tools in model/ wrap models with the same `UInt8Input`, so an exported ONNX file has
the default model's interface (uint8 NHWC in, L2-normalised out) whatever it was trained on.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np

from imgdedup.runtime.base import as_embeddings
from imgdedup.runtime.spec import ModelSpec

log = logging.getLogger(__name__)


def _torch():
    try:
        import torch
    except ImportError as exc:
        raise RuntimeError("torch is not installed: install the package with the [torch] extra") from exc
    return torch


def uint8_input(net, spec: ModelSpec, *, half: bool = False):
    """`net` behind a uint8 NHWC RGB input: what the spec says the net takes (channel order,
    layout, dtype, normalisation) happens inside, and the output is float32, L2-normalised."""
    torch = _torch()

    class UInt8Input(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net
            norm = spec.input.normalize
            scale = norm.scale if norm else 1.0
            mean = norm.mean if norm else (0.0, 0.0, 0.0)
            std = norm.std if norm else (1.0, 1.0, 1.0)
            # x' = (x * scale - mean) / std  ==  x * a + b, per channel
            a = torch.tensor([scale / s for s in std]).view(1, 3, 1, 1)
            b = torch.tensor([-m / s for m, s in zip(mean, std)]).view(1, 3, 1, 1)
            self.register_buffer("a", a)
            self.register_buffer("b", b)
            self.float_input = spec.input.dtype != "uint8"
            self.nchw = spec.input.layout == "NCHW"
            self.bgr = spec.input.channels == "BGR"
            self.half = half
            self.l2 = not spec.output.l2_normalized

        def forward(self, x):
            if self.bgr:
                x = x.flip(-1)
            if self.float_input or self.nchw:
                x = x.permute(0, 3, 1, 2)  # NCHW view of NHWC memory: channels-last already
            if self.float_input:
                x = x.float() * self.a + self.b
                if self.half:
                    x = x.half()
            if not self.nchw and self.float_input:
                x = x.permute(0, 2, 3, 1)
            y = self.net(x).float().flatten(1)
            return torch.nn.functional.normalize(y, dim=1) if self.l2 else y

    return UInt8Input()


def load_net(spec: ModelSpec):
    """The spec's PyTorch model, on the CPU, in eval mode."""
    torch = _torch()
    source = spec.source
    if source.format == "torchscript":
        path = spec.model_path()
        if not path.is_file():
            raise FileNotFoundError(f"TorchScript file for {spec.name!r} not found: {path}")
        return torch.jit.load(str(path), map_location="cpu").eval()
    if source.format == "torchvision":
        try:
            import torchvision
        except ImportError as exc:
            raise RuntimeError("torchvision is not installed (needed for a torchvision model spec)") from exc
        net = getattr(torchvision.models, source.architecture)(weights=None)
        if hasattr(net, "fc"):  # the pooled features, not ImageNet's classes
            net.fc = torch.nn.Identity()
        if not source.random_weights:
            path = spec.model_path()
            state = torch.load(str(path), map_location="cpu", weights_only=True)
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            missing, unexpected = net.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise ValueError(f"weights {path} do not fit torchvision {source.architecture}: missing {missing[:5]}, unexpected {unexpected[:5]}")
        else:
            log.warning("model %s: torchvision %s with RANDOM weights (speed tests only)", spec.name, source.architecture)
        return net.eval()
    raise ValueError(f"model {spec.name!r} is an {source.format} model: serve it with embedder onnxruntime or triton")


@dataclass(frozen=True)
class TorchOptions:
    device: str = "auto"  # auto: cuda when torch sees a GPU, else cpu; or "cuda:1", "cpu"
    half: bool | None = None  # None: fp16 on CUDA, fp32 on the CPU
    channels_last: bool = True
    compile: bool = False  # torch.compile (first batches of each shape compile: slow start)
    threads: int = 0  # CPU intra-op threads; 0: torch's default


class TorchEmbedder:
    """A PyTorch model on one device; `embed` may be called from several threads."""

    def __init__(self, spec: ModelSpec, options: TorchOptions = TorchOptions()):
        torch = _torch()
        self.spec = spec
        device = options.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        on_cuda = self.on_gpu = self.device.type == "cuda"
        self.on_cpu = self.device.type == "cpu"
        self.half = on_cuda if options.half is None else options.half
        if options.threads and not on_cuda:
            torch.set_num_threads(options.threads)
        net = load_net(spec)
        if self.half:
            net = net.half()
        module = uint8_input(net, spec, half=self.half).to(self.device).eval()
        if options.channels_last:
            module = module.to(memory_format=torch.channels_last)
        self._module = torch.compile(module) if options.compile else module
        self._torch = torch
        self._pin = on_cuda
        # CUDA work from several threads shares the device; one at a time keeps each batch's
        # latency whole, while the next batch's preparation (decode, stack) overlaps on the CPU.
        self._lock = threading.Lock() if on_cuda else None
        size = spec.input_size
        for n in (1, 8):  # warm-up: cuDNN picks its kernels, compile traces
            self.embed(np.zeros((n, size, size, 3), np.uint8))
        log.info("model %s on PyTorch %s, device %s%s", spec.name, torch.__version__, self.device, " fp16" if self.half else "")

    @property
    def providers(self) -> list[str]:
        return [f"torch:{self.device}{':fp16' if self.half else ''}"]

    def ready(self) -> bool:
        return True

    def close(self) -> None:
        pass

    def embed(self, images: np.ndarray, *, alone: bool = False) -> np.ndarray:
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(images))
        with torch.inference_mode():
            if self._pin:
                x = x.pin_memory().to(self.device, non_blocking=True)
            if self._lock is not None:
                with self._lock:
                    out = self._module(x).cpu()
            else:
                out = self._module(x)
        return as_embeddings(out.numpy(), len(images), self.spec, normalized=True)  # the wrapper normalised
