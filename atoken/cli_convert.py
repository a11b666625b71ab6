"""``atoken convert``: checkpoints of other releases -> ``save_pretrained`` folders.

    atoken convert official CHECKPOINT OUT_DIR [--config official.yaml] [--fsq] [--heads N]
                                               [--overwrite]

``official`` reads an apple/ml-atoken checkpoint (``.pt`` with ``weights_only=True``, or
``.safetensors``), maps it strictly (:mod:`atoken.official`) and writes ``config.json``,
``model.safetensors`` and the licence ``NOTICE.md`` into a new or empty OUT_DIR (a tokenizer
folder only with ``--overwrite``; a folder of other files never). Warnings (NaN or infinite
weights) are printed to stderr. The 3D Gaussian decoder (``3d_decode_gs.pt``, recognised by its
keys, with ``--config 3d_decode_gs.yaml``) becomes a Gaussian decoder folder instead
(:mod:`atoken.official.gaussian_folder`).
"""

from __future__ import annotations

import warnings

import click

from atoken.cli_common import _fail
from atoken.core.errors import AtokenError, NonFiniteWeightsWarning

__all__ = ["convert"]


@click.group()
def convert() -> None:
    """Convert checkpoints of other releases into atoken tokenizer folders."""


@convert.command("official")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="The official YAML (configs/atoken-*.yaml): head counts and the FSQ settings.",
)
@click.option(
    "--fsq/--kl",
    "fsq",
    default=None,
    help="So/D (FSQ on the posterior mean) or So/C (continuous) [default: the YAML's, else kl].",
)
@click.option("--heads", type=click.IntRange(min=1), default=None, help="Encoder heads [16].")
@click.option(
    "--decoder-heads", type=click.IntRange(min=1), default=None, help="Decoder heads [from shapes]."
)
@click.option(
    "--licence",
    "licence_file",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Your copy of the official MODEL-LICENSE, copied beside the weights.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace the tokenizer in OUT_DIR (a folder of other files is never written into).",
)
def official(
    checkpoint: str,
    out_dir: str,
    config_path: str | None,
    fsq: bool | None,
    heads: int | None,
    decoder_heads: int | None,
    licence_file: str | None,
    overwrite: bool,
) -> None:
    """Convert an official AToken CHECKPOINT into the tokenizer folder OUT_DIR (new or empty;
    an existing tokenizer folder with --overwrite)."""
    from atoken.official import convert_official
    from atoken.official.gaussian_folder import is_gaussian_decoder_checkpoint
    from atoken.official.notice import NOTICE_NAME

    if is_gaussian_decoder_checkpoint(checkpoint):
        if fsq is not None or heads is not None or decoder_heads is not None:
            click.echo(
                "--fsq/--kl, --heads and --decoder-heads apply to tokenizers: ignored", err=True
            )
        _gaussian_decoder(checkpoint, out_dir, config_path, licence_file, overwrite)
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NonFiniteWeightsWarning)
        try:
            folder = convert_official(
                checkpoint,
                out_dir,
                config_path,
                licence_file=licence_file,
                heads=heads,
                decoder_heads=decoder_heads,
                fsq=fsq,
                overwrite=overwrite,
            )
        except AtokenError as exc:
            raise _fail(exc) from exc
        finally:  # shown on stderr, also when the conversion then fails
            for warning in caught:
                click.echo(f"Warning ({warning.category.__name__}): {warning.message}", err=True)
    click.echo(f"converted {checkpoint} into {folder} (licence notice: {folder / NOTICE_NAME})")


def _gaussian_decoder(
    checkpoint: str,
    out_dir: str,
    config_path: str | None,
    licence_file: str | None,
    overwrite: bool,
) -> None:
    """``3d_decode_gs.pt`` -> a converted Gaussian decoder folder."""
    from atoken.official.gaussian_folder import convert_gaussian_decoder
    from atoken.official.notice import NOTICE_NAME

    try:
        folder = convert_gaussian_decoder(
            checkpoint, out_dir, config_path, licence_file=licence_file, overwrite=overwrite
        )
    except AtokenError as exc:
        raise _fail(exc) from exc
    click.echo(
        f"converted the Gaussian decoder {checkpoint} into {folder} (load it with "
        f"atoken.official.load_gaussian_decoder; licence notice: {folder / NOTICE_NAME})"
    )
