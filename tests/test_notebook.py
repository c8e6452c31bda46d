"""examples/ab_test.ipynb runs from top to bottom in a real Jupyter kernel (nbclient).

Any cell that raises fails the test (``CellExecutionError`` names the cell).
The notebook runs in a temporary directory, so its ``output/ab_test.png``
lands there, not in the repository.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "ab_test.ipynb"


@pytest.mark.slow
def test_ab_test_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Importing gradio (another test) sets MPLBACKEND=agg process-wide; the kernel
    # inherits the environment and would then draw no inline image.
    monkeypatch.delenv("MPLBACKEND", raising=False)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()

    png = tmp_path / "output" / "ab_test.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "output" / "liked_chat.jsonl").stat().st_size > 0
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("feedback by prompt_version" in h for h in html)  # Metrics rendered as a table
    assert any("feedback-plugin-entry" in h for h in html)  # and one SessionQAEntry
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the plot, inline
    text = "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")
    assert "80 turns recorded" in text
    assert "v2 is liked more" in text
