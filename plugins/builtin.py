"""The built-in plugins: the modules atoken registers through the same hooks as a third
party's, by plugin name (what ``atoken plugins`` shows and ``ATOKEN_DISABLE_PLUGINS`` takes),
in loading order; and where a moved module now lives (its plugin name stays)."""

from __future__ import annotations

__all__ = ["DEFAULT_PLUGINS", "PLUGIN_MODULES"]


#: Built-in plugins: modules registered through the same hooks as third-party ones.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "atoken.modalities.image",
    "atoken.modalities.video",
    "atoken.modalities.mesh",
    "atoken.plugins.attention",
    "atoken.plugins.bottlenecks.kl",
    "atoken.plugins.bottlenecks.fsq",
    "atoken.plugins.heads",
    "atoken.plugins.tensorboard",
    "atoken.losses.l1",
    "atoken.losses.mse",
    "atoken.losses.lpips",
    "atoken.losses.gram",
    "atoken.losses.clip",
    "atoken.losses.kl",
    "atoken.losses.sets",
    "atoken.plugins.metrics.pixel",
    "atoken.plugins.metrics.perceptual",
    "atoken.plugins.metrics.video",
    "atoken.plugins.metrics.semantic",
    "atoken.plugins.metrics.sets",
    "atoken.plugins.text_encoders.minilm",
    "atoken.plugins.text_encoders.open_clip",
    "atoken.plugins.text_encoders.open_clip_text",
    "atoken.losses.siglip",
    "atoken.losses.distill",
    "atoken.modalities.image.data",
    "atoken.data.builtin_sources",
    "atoken.modalities.video.data",
    "atoken.modalities.video.cli",
    "atoken.data.meshes",
    "atoken.data.mesh_cli",
    "atoken.tasks.base",
    "atoken.tasks.image",
    "atoken.tasks.video",
    "atoken.tasks.mesh",
    "atoken.tasks.alignment",
    "atoken.transforms",
)

#: Built-in plugins whose module moved (#31): the plugin keeps its name (what
#: ``ATOKEN_DISABLE_PLUGINS`` and ``atoken plugins`` show), the module is loaded from here.
PLUGIN_MODULES: dict[str, str] = {
    "atoken.transforms": "atoken.engine.transforms",
    "atoken.plugins.metrics.video": "atoken.modalities.video.metrics",
    "atoken.tasks.video": "atoken.modalities.video.task",
    "atoken.tasks.image": "atoken.modalities.image.task",
    "atoken.tasks.mesh": "atoken.modalities.mesh.task",
    "atoken.data.meshes": "atoken.modalities.mesh.data",
    "atoken.data.mesh_cli": "atoken.modalities.mesh.cli",
}
