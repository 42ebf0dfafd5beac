"""Numba kernels: compiled ahead of time when built, just in time otherwise.

Modules declare their kernels with :func:`jit` instead of ``numba.njit`` (same options).
A kernel that Python code calls also names its argument and return types
(``signature=``, numba's notation). ``python -m classifier.compiled`` (run by ``make``)
compiles every such kernel with numba's ahead-of-time compiler into one extension module
beside this file, ``_aot``, plus ``_aot.json`` (the argument types, and a stamp of the
sources it was built from). Why: a process that loads its kernels from numba's cache pays
~0.5 s (importing numba, then linking each cached kernel); the extension loads in a
millisecond and does not import numba at all.

A call goes to the extension when it is there, was built from these very sources (the
stamp: every ``.py`` file of this package and the numpy version) and the arguments have
exactly the built types (an ahead-of-time kernel does not check them: a wrong dtype would
read the wrong memory). Otherwise the call goes to numba's just-in-time dispatcher, as
before: same results, compiled on first use and cached. ``SHORTFLOW_KERNELS=jit`` forces
that (as does ``NUMBA_BOUNDSCHECK=1``, which only the just-in-time path honours).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

__all__ = ["jit", "Kernel", "KERNEL_MODULES", "aot_status", "build"]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

#: modules whose kernels the extension holds (imported by :func:`build`)
KERNEL_MODULES = (
    "classifier.capture.decode_fast",
    "classifier.capture.reader_fast",
    "classifier.flows.table_fast",
    "classifier.flows.lane_fast",
    "classifier.features.groups_fast",
    "classifier.features.featurize_fast",
    "classifier.names.extract_fast",
    "classifier.capture.live_fast",
    "classifier.model.lean",
)

_HERE = Path(__file__).resolve().parent
_MODULE = "_aot"
_MANIFEST = _HERE / f"{_MODULE}.json"

# An argument spec: ("a", dtype str, ndim, contiguous, written) for arrays, or ("i",),
# ("f",), ("b",) for scalars.
Spec = tuple[Any, ...]
_SCALARS: dict[str, tuple[type, ...]] = {
    "i": (int, np.integer),
    "f": (float, int, np.floating, np.integer),
    "b": (bool, np.bool_),
}


class Kernel:
    """A compiled function: the ahead-of-time build's when it fits the call, else numba's
    just-in-time dispatcher (made on first need). Called like the Python function."""

    def __init__(
        self, func: Callable[..., Any], options: dict[str, Any], signature: str | None
    ) -> None:
        self.py_func = func
        self.options = options
        self.signature = signature
        self.export_name = f"{func.__module__.rsplit('.', 1)[-1]}__{func.__name__}"
        self.__name__ = func.__name__
        self.__qualname__ = func.__qualname__
        self.__module__ = func.__module__
        self.__doc__ = func.__doc__
        self._dispatcher: Any = None
        self._aot: Callable[..., Any] | None = None
        self._specs: list[Spec] = []
        self._bound = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self._bound:
            self._bind()
        if self._aot is not None and not kwargs and _fits(args, self._specs):
            return self._aot(*args)
        return self.dispatcher(*args, **kwargs)

    @property
    def dispatcher(self) -> Any:
        """numba's just-in-time dispatcher of this kernel (imports numba)."""
        if self._dispatcher is None:
            self._dispatcher = _numba().njit(**self.options)(self.py_func)
        return self._dispatcher

    @property
    def targetoptions(self) -> dict[str, Any]:
        """The numba options, where numba's inlining pass looks for ``inline`` on a called
        function: without this, ``inline="always"`` on a kernel that another kernel calls
        would be silently ignored (numba's pass sees a Kernel, not a dispatcher)."""
        return self.options

    def _bind(self) -> None:
        built = _built()
        if self.signature is not None and built is not None:
            module, specs = built
            self._aot = getattr(module, self.export_name, None)
            self._specs = [tuple(s) for s in specs.get(self.export_name, [])]
        self._bound = True


def jit(signature: str | None = None, **options: Any) -> Callable[[F], F]:
    """Declare a kernel (``options`` as for ``numba.njit``). Give ``signature`` (e.g.
    ``"UniTuple(int64, 2)(uint8[::1], int64)"``) for kernels that Python code calls: they
    are built ahead of time."""

    def wrap(func: F) -> F:
        kernel = Kernel(func, options, signature)
        _REGISTRY.append(kernel)
        return kernel  # type: ignore[return-value]

    return wrap


_REGISTRY: list[Kernel] = []


def _fits(args: Sequence[Any], specs: list[Spec]) -> bool:
    if len(args) != len(specs):
        return False
    for value, spec in zip(args, specs, strict=True):
        if spec[0] == "a":
            if (
                type(value) is not np.ndarray
                or value.dtype.str != spec[1]
                or value.ndim != spec[2]
                or (spec[3] and not value.flags.c_contiguous)
                or (spec[4] and not value.flags.writeable)
            ):
                return False
        elif not isinstance(value, _SCALARS[spec[0]]):
            return False
    return True


# ---------------------------------------------------------------------------------------
# which build is usable


_LOADED: tuple[Any, dict[str, list[Spec]]] | None = None
_CHECKED = False


def _wanted() -> bool:
    if os.environ.get("SHORTFLOW_KERNELS", "auto") == "jit":
        return False
    return os.environ.get("NUMBA_BOUNDSCHECK", "0") in ("", "0")


def source_stamp() -> str:
    """What a build depends on: every ``.py`` file of the package, and numpy's version."""
    digest = hashlib.sha256(np.__version__.encode())
    for path in sorted(_HERE.rglob("*.py")):
        digest.update(str(path.relative_to(_HERE)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _built() -> tuple[Any, dict[str, list[Spec]]] | None:
    """The extension and its argument specs, when it is there, current and wanted."""
    global _LOADED, _CHECKED
    if _CHECKED:
        return _LOADED
    _CHECKED = True
    if not _wanted():
        return None
    try:
        manifest = json.loads(_MANIFEST.read_text())
    except (OSError, ValueError):
        logger.debug("no ahead-of-time kernels (%s): compiling just in time", _MANIFEST)
        return None
    if manifest.get("stamp") != source_stamp():
        logger.warning(
            "the ahead-of-time kernels are older than the sources (run `make` "
            "or `python -m classifier.compiled`); compiling just in time"
        )
        return None
    try:
        module = importlib.import_module(f"classifier.{_MODULE}")
    except ImportError as exc:
        logger.warning("cannot load the ahead-of-time kernels (%s); compiling just in time", exc)
        return None
    _LOADED = (module, manifest["kernels"])
    return _LOADED


def aot_status() -> str:
    """ "aot" when calls go to the ahead-of-time build, else "jit"."""
    return "aot" if _built() is not None else "jit"


# ---------------------------------------------------------------------------------------
# numba itself


_NUMBA: Any = None


def _numba() -> Any:
    """Import numba once and teach it that a :class:`Kernel` named in a kernel's globals is
    its dispatcher (so kernels call each other, and inline, as numba functions do)."""
    global _NUMBA
    if _NUMBA is None:
        import numba
        from numba.core.typing.typeof import typeof_impl

        @typeof_impl.register(Kernel)
        def _typeof_kernel(value: Kernel, context: Any) -> Any:
            return numba.typeof(value.dispatcher)

        _NUMBA = numba
    return _NUMBA


def _spec(arg: Any) -> Spec:
    types = _numba().types
    if isinstance(arg, types.Array):
        return ("a", np.dtype(str(arg.dtype)).str, arg.ndim, arg.layout == "C", arg.mutable)
    if isinstance(arg, types.Boolean):
        return ("b",)
    if isinstance(arg, types.Integer):
        return ("i",)
    if isinstance(arg, types.Float):
        return ("f",)
    raise TypeError(f"no ahead-of-time argument type for {arg}")


def build(output_dir: Path = _HERE) -> Path:
    """Compile every kernel that has a signature into ``output_dir/_aot*.so`` and write
    the manifest. Takes a few minutes. Returns the manifest's path."""
    for name in KERNEL_MODULES:
        importlib.import_module(name)
    numba = _numba()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from numba.pycc import CC
        from numba.pycc import compiler as pycc_compiler

        class ReleaseGil(pycc_compiler.Flags):
            """The built kernels release the GIL while they run, as the just-in-time ones
            declared ``nogil=True`` do (so a kernel in one thread does not stop the
            others)."""

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self.release_gil = True  # type: ignore[assignment]

        plain_flags = pycc_compiler.Flags
        pycc_compiler.Flags = ReleaseGil  # type: ignore[misc]
        cc = CC(_MODULE)
        cc.output_dir = str(output_dir)
        cc.verbose = False
        specs: dict[str, list[Spec]] = {}
        for kernel in _REGISTRY:
            if kernel.signature is None:
                continue
            sig = numba.core.sigutils.normalize_signature(kernel.signature)[0]
            specs[kernel.export_name] = [_spec(a) for a in sig]
            cc.export(kernel.export_name, kernel.signature)(kernel.py_func)
        try:
            cc.compile()
        finally:
            pycc_compiler.Flags = plain_flags  # type: ignore[misc]
    manifest = output_dir / f"{_MODULE}.json"
    manifest.write_text(json.dumps({"stamp": source_stamp(), "kernels": specs}, indent=1))
    return manifest


if __name__ == "__main__":
    # run as a script this file is ``__main__``; the kernels register with the package's
    # module, so build through that one
    from classifier.compiled import build as _build

    print(f"wrote {_build()}", file=sys.stderr)
