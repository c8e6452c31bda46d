"""Framework integrations, each behind an optional extra.

- ``rest``: FastAPI router and ready app (``feedback-plugin[web]``)
- ``webapp``: the demo chat web app with thumbs buttons (``[web]``)
- ``streamlit_feedback``, ``gradio_feedback``, ``chainlit_feedback``: chat UI adapters

Nothing here is imported by ``import feedback_plugin``.
"""
