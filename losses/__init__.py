"""Built-in losses. Each module is a plugin that registers its loss by name."""

__all__: list[str] = []
