"""Built-in bottlenecks (W_r): ``kl`` (diagonal Gaussian) and ``fsq`` (finite scalar quantizer)."""

__all__: list[str] = []
