"""Moved to model_assets.chat (the serving code renders chats too); this name stays only until the last caller
outside that change, tests/integration/test_prefix_routing.py, imports model_assets.chat."""

from model_assets.chat import format_chat, template_source  # noqa: F401
