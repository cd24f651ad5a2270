"""The runtimes that run exported artifacts: one registry and one way to open, describe and run a session.

`RUNTIMES` maps each runtime to its artifact format and file suffix; `open_session` loads an
artifact with explicit settings (threads, ORT's session config and graph optimisations, LiteRT's
signature) and returns a `Session` with the model's input and output signature in numpy dtypes.
Export's parity gate, `bench`, `pick --measure` (through bench) and `benchmarks/` all open
artifacts here, so an artifact is verified exactly as it is later timed.

Torch-free on purpose: a device has numpy and one runtime, imported only when a session opens,
so a missing one gives the `pip install` line.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from edgebert.errors import EdgebertError, require

# A sidecar's `runtime.graph_optimization_level` (short name or enum name); without one: ORT_ENABLE_ALL.
ORT_OPT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
# numpy's names for ORT tensor types where they differ ('tensor(float)' is float32).
ORT_DTYPES = {"float": "float32", "double": "float64"}
# ORT's intra-op workers spin-wait between parallel sections unless told not to (a profile's `spin_wait`).
SPIN_CONFIG_KEY = "session.intra_op.allow_spinning"
SHORT_REASON = 300  # characters of a runtime's own error message quoted in ours
# LiteRT's C++ logger announces its default delegate on every interpreter: noise on every bench and export.
LITERT_NOISE = re.compile(r"INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.")
# ExecuTorch's runtime logs its CPU probing and thread-pool resets on stderr when a program loads.
EXECUTORCH_NOISE = re.compile(r"\[(cpuinfo_utils|threadpool)\.cpp:\d+\] ")


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as the runtime declares it: numpy dtype; a str or None dim is dynamic."""

    name: str
    dtype: str
    shape: list[int | str | None]

    @property
    def dims(self) -> list[int | None]:
        """The shape with every dynamic axis as None."""
        return [dim if isinstance(dim, int) and dim > 0 else None for dim in self.shape]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class SessionOptions:
    """How to load an artifact: threads, plus the runtime-specific settings its sidecar or profile asks for."""

    threads: int
    session_config: dict[str, str] = field(default_factory=dict)  # ORT session config entries
    disabled_optimizers: tuple[str, ...] = ()  # ORT graph fusions left out
    graph_optimization_level: str | None = None  # an ORT_OPT_LEVELS key or value; None: "all"
    signature_key: str | None = None  # LiteRT; None: the model's only signature

    @classmethod
    def recorded(
        cls,
        threads: int,
        runtime: dict[str, Any] | None = None,
        signature_key: str | None = None,
        session_config: dict[str, str] | None = None,
    ) -> SessionOptions:
        """From what a sidecar records (its `runtime` settings and `signature_key`): export's gate and `bench`
        both open an artifact through here, so it is verified with the settings it is timed with."""
        runtime = runtime or {}
        return cls(
            threads,
            dict(session_config or {}),
            tuple(runtime.get("disabled_optimizers") or ()),
            runtime.get("graph_optimization_level"),
            signature_key,
        )


class RuntimeLoadError(EdgebertError):
    """The runtime itself refused the file (as opposed to bad settings, which are refused before)."""

    def __init__(self, artifact: Path, runtime: str, reason: str) -> None:
        super().__init__(f"{artifact}: {runtime} cannot load it, is it a valid model? ({reason})")
        self.reason = reason


@dataclass
class Session:
    """A loaded artifact: the runtime's object, its signature, and the two ways to call it."""

    runtime: Runtime
    version: str
    handle: Any  # onnxruntime.InferenceSession, a LiteRT SignatureRunner or a PteMethod
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    details: dict[str, Any] = field(default_factory=dict)  # the settings in force, for results

    def bind(self, feeds: dict[str, Any]) -> Callable[[], Any]:
        """The exact call a timed loop makes: a C-level partial, no Python frame of ours in between."""
        return self.runtime.bind(self.handle, feeds)

    def run(self, feeds: dict[str, Any]) -> list[Any]:
        """Outputs in the signature's order; inputs are cast to the declared dtypes first (untimed use only)."""
        import numpy as np

        cast = {spec.name: np.asarray(feeds[spec.name]).astype(spec.dtype, copy=False) for spec in self.inputs}
        return self.runtime.outputs(self.handle, cast, self.outputs)


class Runtime:
    """One runtime: the artifact format it runs, and how to open, bind and run its sessions."""

    name: ClassVar[str]
    format: ClassVar[str]  # edgebert's name for the artifact format (`export --format`)
    suffix: ClassVar[str]
    module: ClassVar[str]  # what to import; a missing one is a `pip install` hint (errors.EXTRA_FOR_MODULE)
    # Its run call keeps the GIL, so sessions in Python threads run one at a time (bench's parallel sessions are then
    # not timed). Checked by a Python thread counting while one call ran: onnxruntime 1.32 and ai-edge-litert 2.3
    # let it count throughout (longest stall 40 and 28 ms, the scheduler's); executorch 1.5.1 stalled it 475 of 506 ms.
    holds_gil: ClassVar[bool] = False

    def load(self) -> Any:
        return require(self.module, f"running a {self.suffix} artifact")

    def open(self, module: Any, artifact: Path, options: SessionOptions) -> Session: ...

    def bind(self, handle: Any, feeds: dict[str, Any]) -> Callable[[], Any]: ...

    def outputs(self, handle: Any, feeds: dict[str, Any], outputs: list[TensorSpec]) -> list[Any]: ...

    def version(self, module: Any) -> str: ...


class OnnxRuntime(Runtime):
    name, format, suffix, module = "onnxruntime", "onnx", ".onnx", "onnxruntime"

    def open(self, module: Any, artifact: Path, options: SessionOptions) -> Session:
        ort = module
        try:
            level = ort_opt_level(options.graph_optimization_level)
        except ValueError as exc:
            raise EdgebertError(f"{artifact}: {exc}") from exc
        settings = ort.SessionOptions()
        settings.intra_op_num_threads = options.threads
        settings.inter_op_num_threads = 1
        settings.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        settings.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        settings.log_severity_level = 4  # fatal only: failures come back as exceptions, reported in one line
        for key, value in options.session_config.items():
            settings.add_session_config_entry(key, value)
        disabled = list(options.disabled_optimizers)
        with runtime_rejects(artifact, self.name):
            session = ort.InferenceSession(
                str(artifact), sess_options=settings, providers=["CPUExecutionProvider"], disabled_optimizers=disabled
            )
        details = {
            "graph_optimization_level": level,
            "disabled_optimizers": disabled,
            "execution_mode": "sequential",
            "session_config": dict(options.session_config),
        }
        specs = [_ort_spec(node) for node in session.get_inputs()], [_ort_spec(n) for n in session.get_outputs()]
        return Session(self, self.version(ort), session, *specs, details)

    def bind(self, handle: Any, feeds: dict[str, Any]) -> Callable[[], Any]:
        return functools.partial(handle.run, None, feeds)

    def outputs(self, handle: Any, feeds: dict[str, Any], outputs: list[TensorSpec]) -> list[Any]:
        return handle.run(None, feeds)

    def version(self, module: Any) -> str:
        return module.__version__


class LiteRT(Runtime):
    name, format, suffix, module = "litert", "tflite", ".tflite", "ai_edge_litert.interpreter"

    def load(self) -> Any:
        try:
            return super().load()
        except EdgebertError as exc:
            import importlib.util

            if importlib.util.find_spec("tflite_runtime") is not None:
                raise EdgebertError(
                    "only tflite-runtime is installed: it cannot run models from the current converter "
                    "(unknown op versions); run `pip install 'edgebert[litert]'`"
                ) from exc
            raise

    def open(self, module: Any, artifact: Path, options: SessionOptions) -> Session:
        with runtime_rejects(artifact, self.name):
            interpreter = module.Interpreter(model_path=str(artifact), num_threads=options.threads)
            with native_stderr_without(LITERT_NOISE):
                interpreter.allocate_tensors()  # applies the default XNNPACK delegate
            signatures = interpreter.get_signature_list()
        key = options.signature_key or (next(iter(signatures)) if len(signatures) == 1 else None)
        if key not in signatures:
            raise EdgebertError(
                f"{artifact}: signature {key!r} not in the model (has {sorted(signatures) or 'none'}); "
                "the sidecar's signature_key must name one"
            )
        runner = interpreter.get_signature_runner(key)
        inputs = [_litert_spec(name, detail) for name, detail in runner.get_input_details().items()]
        outputs = sorted(
            (_litert_spec(name, detail) for name, detail in runner.get_output_details().items()),
            key=lambda spec: _output_index(spec.name),
        )
        try:  # after allocate_tensors a delegated graph has an extra DELEGATE node; private, but stable for years
            xnnpack = any(op["op_name"] == "DELEGATE" for op in interpreter._get_ops_details())
        except AttributeError:
            xnnpack = None
        details = {"signature_key": key, "xnnpack": xnnpack}
        return Session(self, self.version(module), runner, inputs, outputs, details)

    def bind(self, handle: Any, feeds: dict[str, Any]) -> Callable[[], Any]:
        return functools.partial(handle, **feeds)

    def outputs(self, handle: Any, feeds: dict[str, Any], outputs: list[TensorSpec]) -> list[Any]:
        results = handle(**feeds)
        return [results[spec.name] for spec in outputs]

    def version(self, module: Any) -> str:
        import ai_edge_litert

        return getattr(ai_edge_litert, "__version__", None) or dist_version("ai-edge-litert") or "unknown"


@dataclass(frozen=True)
class PteMethod:
    """An ExecuTorch session's handle: the bound `forward` and its inputs' order (the bindings take a list)."""

    method: Any  # executorch's ExecuTorchMethod
    input_names: list[str]


class ExecuTorch(Runtime):
    """ExecuTorch's Python runtime (`executorch.runtime`, XNNPACK delegate built in).

    Its bindings link libtorch, so running a `.pte` from Python needs torch; they take torch tensors only,
    converted once per feed in `bind`. The `.pte` keeps no tensor names: edgebert's exporter stores the
    signature (names, dtypes, dynamic axes) as a constant method, `SIGNATURE_METHOD`, read back here.
    """

    name, format, suffix, module = "executorch", "executorch", ".pte", "executorch.runtime"
    SIGNATURE_METHOD = "edgebert_signature"
    holds_gil = True

    def load(self) -> Any:
        import warnings

        with warnings.catch_warnings():  # its bindings warn "experimental API" on every import
            warnings.simplefilter("ignore")
            return super().load()

    def open(self, module: Any, artifact: Path, options: SessionOptions) -> Session:
        import json

        from executorch.extension.pybindings import portable_lib

        with native_stderr_without(EXECUTORCH_NOISE):
            portable_lib._unsafe_reset_threadpool(options.threads)  # one pool per process: the last session's
            with runtime_rejects(artifact, self.name):
                program = module.Runtime.get().load_program(artifact)
                method = program.load_method("forward")
        if self.SIGNATURE_METHOD not in program.method_names:
            raise EdgebertError(f"{artifact}: a .pte without edgebert's signature: export it with `edgebert export`")
        signature = json.loads(program.load_method(self.SIGNATURE_METHOD).execute([])[0])
        inputs, outputs = ([TensorSpec(**spec) for spec in signature[side]] for side in ("inputs", "outputs"))
        handle = PteMethod(method._method, [spec.name for spec in inputs])
        details = {"threads": portable_lib._threadpool_get_thread_count()}
        return Session(self, self.version(module), handle, inputs, outputs, details)

    def bind(self, handle: Any, feeds: dict[str, Any]) -> Callable[[], Any]:
        import torch

        return functools.partial(handle.method.call, [torch.from_numpy(feeds[name]) for name in handle.input_names])

    def outputs(self, handle: Any, feeds: dict[str, Any], outputs: list[TensorSpec]) -> list[Any]:
        return [output.numpy() for output in self.bind(handle, feeds)()]

    def version(self, module: Any) -> str:
        return dist_version("executorch") or "unknown"


@contextmanager
def native_stderr_without(noise: re.Pattern[str]) -> Iterator[None]:
    """Drop a native library's known chatter from file descriptor 2, below Python's `sys.stderr`; pass the rest on."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode(errors="replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not noise.match(line))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


RUNTIMES: dict[str, Runtime] = {runtime.name: runtime for runtime in (OnnxRuntime(), LiteRT(), ExecuTorch())}
RUNTIME_FOR_FORMAT = {runtime.format: name for name, runtime in RUNTIMES.items()}
FORMAT_FOR_RUNTIME = {name: runtime.format for name, runtime in RUNTIMES.items()}
FORMATS = tuple(RUNTIME_FOR_FORMAT)  # the formats `export` writes (`export.EXPORTERS`), each with its runtime
SUFFIXES = tuple(runtime.suffix for runtime in RUNTIMES.values())


def runtime_for_format(fmt: str) -> Runtime:
    return RUNTIMES[RUNTIME_FOR_FORMAT[fmt]]


def runtime_for_artifact(artifact: Path) -> Runtime:
    """The runtime that runs `artifact`, by its suffix; an unknown suffix is one line."""
    for runtime in RUNTIMES.values():
        if artifact.suffix == runtime.suffix:
            return runtime
    raise EdgebertError(f"{artifact}: unknown artifact type {artifact.suffix!r}: expected {' or '.join(SUFFIXES)}")


def artifact_name(stem: str, precision: str, fmt: str) -> str:
    """`stem.int8.onnx`: how export names an artifact of a (sub-)network by default."""
    return f"{stem}.{precision}{runtime_for_format(fmt).suffix}"


def ort_opt_level(requested: str | None) -> str:
    """ORT's enum name for a short or enum level name (None: all); anything else is one line."""
    requested = requested or "all"
    level = ORT_OPT_LEVELS.get(requested, requested)
    if level not in ORT_OPT_LEVELS.values():
        raise ValueError(f"graph_optimization_level {requested!r} is none of {', '.join(ORT_OPT_LEVELS)}")
    return level


def open_session(artifact: Path, options: SessionOptions, runtime: Runtime | None = None) -> Session:
    """Load `artifact` in its runtime (by default, its suffix's) with explicit settings.

    Settings are checked before the runtime sees the file, so a RuntimeLoadError ("cannot load
    it") only ever means the runtime's own refusal.
    """
    runtime = runtime or runtime_for_artifact(artifact)
    return runtime.open(runtime.load(), artifact, options)


@contextmanager
def runtime_rejects(artifact: Path, runtime: str) -> Iterator[None]:
    """Wraps only the runtime's own load: its exception becomes 'cannot load it', in its words."""
    try:
        yield
    except Exception as exc:  # runtimes raise their own exception types for a bad file
        raise RuntimeLoadError(artifact, runtime, short_reason(exc)) from exc


def ort_dtype(declared: str) -> str:
    """numpy's name for an ORT tensor type: 'tensor(float)' -> 'float32', 'tensor(float16)' -> 'float16'."""
    name = declared.removeprefix("tensor(").removesuffix(")")
    return ORT_DTYPES.get(name, name)


def _ort_spec(node: Any) -> TensorSpec:
    return TensorSpec(node.name, ort_dtype(node.type), list(node.shape or []))


def _litert_spec(name: str, detail: dict[str, Any]) -> TensorSpec:
    import numpy as np

    shape = [dim if dim > 0 else None for dim in detail["shape_signature"].tolist()]
    return TensorSpec(name, np.dtype(detail["dtype"]).name, shape)


def _output_index(name: str) -> tuple[int, str]:
    """LiteRT numbers outputs output_0, output_1, ... in forward's order; sort by that number, not as text."""
    suffix = name.rsplit("_", 1)[-1]
    return (int(suffix), name) if suffix.isdigit() else (1 << 30, name)


def dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def short_reason(exc: BaseException) -> str:
    """A runtime's error as one line, cut short."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= SHORT_REASON else text[: SHORT_REASON - 3] + "..."
