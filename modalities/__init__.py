"""Built-in modalities. Each module is a plugin that registers its modality by name.

:data:`DEFAULT_MODALITY` is the modality of raw samples when neither the call nor the
tokenizer config (``default_modality``) names one.
"""

__all__ = ["DEFAULT_MODALITY"]

#: The modality a :class:`~atoken.Tokenizer` assumes for raw samples when none is named.
DEFAULT_MODALITY = "image"
