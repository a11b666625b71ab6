"""Built-in modalities. Each module is a plugin that registers its modality by name."""

__all__: list[str] = []
