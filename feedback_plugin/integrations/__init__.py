"""Framework integrations, each behind an optional extra.

- ``rest``: FastAPI router and ready app (``feedback-plugin[web]``)
- ``auth``, ``guards``: API keys and request checks, shared by ``rest`` and the demo
- ``demo``: the demo chat web app with thumbs buttons (``[web]``; run it with
  ``feedback-plugin serve``); ``webapp`` is its older name
- ``streamlit_feedback``, ``gradio_feedback``, ``chainlit_feedback``: chat UI adapters

Nothing here is imported by ``import feedback_plugin``.
"""
