"""``atoken data import meshes`` and ``atoken data export-views``: the mesh family's commands,
added through ``register_commands``.

A plugin like any other (in ``DEFAULT_PLUGINS``, named ``atoken.data.mesh_cli``): its hook adds
:func:`import_meshes_command` under the core ``atoken data import`` group, the way a
third-party family adds its own importer, beside :mod:`atoken.modalities.mesh.data` which it
drives. A family never imports the CLI: its options and errors come from
:mod:`atoken.plugins.command_kit`, as every command's do.
Heavy imports stay inside the command so ``atoken --help`` stays fast.
"""

from __future__ import annotations

import click

from atoken.core.errors import AtokenError
from atoken.plugins.command_kit import echo_import, fail, wait_option
from atoken.plugins.hookspecs import hookimpl

__all__ = ["export_views_command", "import_meshes_command", "register_commands"]


@click.command(name="meshes")
@click.argument("paths", nargs=-1, required=True)
@click.option("--views", default=16, show_default=True, type=click.IntRange(1))
@click.option("--eval-views", default=4, show_default=True, type=click.IntRange(0))
@click.option("--render-size", default=256, show_default=True, type=click.IntRange(16))
@click.option("--resolution", default=64, show_default=True, type=click.IntRange(1, 256))
@click.option("--patch-size", default=16, show_default=True, type=click.IntRange(1))
@click.option(
    "--renderer", default="auto", show_default=True, type=click.Choice(["auto", "embree", "torch"])
)
@click.option(
    "--pybullet",
    "pybullet_set",
    default=None,
    type=click.Choice(["train", "heldout", "all"]),
    help="Add pybullet_data's textured meshes (the train or held-out object set).",
)
@click.option("--skip-bad", is_flag=True, help="Report unusable meshes instead of failing.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@wait_option
def import_meshes_command(
    paths: tuple[str, ...],
    views: int,
    eval_views: int,
    render_size: int,
    resolution: int,
    patch_size: int,
    renderer: str,
    pybullet_set: str | None,
    skip_bad: bool,
    no_progress: bool,
    wait: float,
) -> None:
    """Render, voxelise and store meshes from SRC... (OBJ, PLY, GLB/glTF... files, folders,
    globs) in the mesh store DST (resumable; see docs/3d.md)."""
    from atoken.modalities.mesh.data import MeshSettings, import_meshes
    from atoken.modalities.mesh.pybullet_sets import pybullet_paths

    *srcs, dst = paths
    try:
        if pybullet_set:
            srcs = [*srcs, *pybullet_paths(pybullet_set)]
        if not srcs:
            raise click.UsageError("give at least one SRC (or --pybullet) and the DST store")
        settings = MeshSettings(
            views=views,
            eval_views=eval_views,
            render_size=render_size,
            resolution=resolution,
            patch_size=patch_size,
            renderer=renderer,
        )
        report = import_meshes(
            srcs, dst, settings=settings, progress=not no_progress, lock_timeout=wait,
            skip_bad=skip_bad,
        )  # fmt: skip
    except AtokenError as exc:
        raise fail(exc) from exc
    echo_import(report, "meshes", dst)


@click.command(name="export-views")
@click.argument("mesh")
@click.argument("out_dir")
@click.option("--views", default=16, show_default=True, type=click.IntRange(1))
@click.option("--size", default=512, show_default=True, type=click.IntRange(16))
@click.option(
    "--fov", "fov_degrees", default=40.0, show_default=True, type=click.FloatRange(1, 179)
)
@click.option("--radius", default=2.0, show_default=True, type=click.FloatRange(0.9, min_open=True))
@click.option(
    "--renderer", default="auto", show_default=True, type=click.Choice(["auto", "embree", "torch"])
)
@click.option("--overwrite", is_flag=True, help="Replace the views in a non-empty OUT_DIR.")
def export_views_command(
    mesh: str,
    out_dir: str,
    views: int,
    size: int,
    fov_degrees: float,
    radius: float,
    renderer: str,
    overwrite: bool,
) -> None:
    """Render MESH from cameras on a sphere and write the views to OUT_DIR in the official
    AToken multi-view layout (NNN.png, NNN_depth.npy, transforms.json; see docs/3d.md)."""
    from atoken.modalities.mesh.official_views import write_official_views

    try:
        rendered = write_official_views(
            mesh, out_dir, views=views, size=size, fov_degrees=fov_degrees, radius=radius,
            renderer=renderer, overwrite=overwrite,
        )  # fmt: skip
    except AtokenError as exc:
        raise fail(exc) from exc
    click.echo(f"wrote {rendered.count} views of {size} x {size} px to {out_dir}")


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.commands["data"].commands["import"].add_command(import_meshes_command)
    cli.commands["data"].add_command(export_views_command)
