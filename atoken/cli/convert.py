"""``atoken convert``: checkpoints of other releases -> ``save_pretrained`` folders.

    atoken convert official CHECKPOINT OUT_DIR [--config official.yaml] [--fsq] [--heads N]
                                               [--text-tower FILE [--text-tokenizer DIR]]
                                               [--gaussian-decoder FILE_OR_DIR
                                                [--gaussian-config YAML]] [--overwrite]

``official`` reads an apple/ml-atoken checkpoint (``.pt`` with ``weights_only=True``, or
``.safetensors``), maps it strictly (:mod:`atoken.official`) and writes ``config.json``,
``model.safetensors`` and the licence ``NOTICE.md`` into a new or empty OUT_DIR (a tokenizer
folder only with ``--overwrite``; a folder of other files never). Warnings (NaN or infinite
weights) are printed to stderr. ``--text-tower`` attaches the SigLIP2-So400m text tower (a local
open_clip checkpoint) with the official logit scale and bias, for ``atoken classify``. The 3D
Gaussian decoder (``3d_decode_gs.pt``, recognised by its keys, with ``--config
3d_decode_gs.yaml``) becomes a Gaussian decoder folder instead
(:mod:`atoken.official.gaussian_folder`); ``--gaussian-decoder`` puts it (the ``.pt`` or such
a folder) into a tokenizer folder instead, whose 3D decode gives the official Gaussians
(``atoken reconstruct --checkpoint OUT_DIR asset.glb``). A checkpoint that is neither an AToken
tokenizer's nor the Gaussian decoder's is refused, naming what it lacks.
"""

from __future__ import annotations

import warnings

import click

from atoken.cli.common import fail
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
    "--text-tower",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="A local open_clip checkpoint of ViT-SO400M-16-SigLIP2-naflex (its text tower is "
    "used, with the official logit scale and bias: zero-shot through atoken classify).",
)
@click.option(
    "--text-tokenizer",
    type=click.Path(file_okay=False, exists=True),
    default=None,
    help="The text tower's Hugging Face tokenizer folder [the --text-tower file's folder].",
)
@click.option(
    "--text-model",
    default=None,
    help="The open_clip model name of --text-tower [ViT-SO400M-16-SigLIP2-naflex].",
)
@click.option(
    "--gaussian-decoder",
    type=click.Path(exists=True),
    default=None,
    help="The official 3D Gaussian decoder (3d_decode_gs.pt, or a folder this command "
    "converted it into): the tokenizer decodes 3D assets to its Gaussians.",
)
@click.option(
    "--gaussian-config",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="The Gaussian decoder's YAML (configs/3d_decode_gs.yaml) [the released settings].",
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
    text_tower: str | None,
    text_tokenizer: str | None,
    text_model: str | None,
    gaussian_decoder: str | None,
    gaussian_config: str | None,
    overwrite: bool,
) -> None:
    """Convert an official AToken CHECKPOINT into the tokenizer folder OUT_DIR (new or empty;
    an existing tokenizer folder with --overwrite)."""
    from atoken.core.errors import ConfigError
    from atoken.official import convert_official
    from atoken.official.gaussian_folder import (
        GAUSSIAN_DECODER,
        OTHER,
        official_checkpoint_kind,
        unknown_checkpoint_message,
    )
    from atoken.official.notice import NOTICE_NAME

    kind = official_checkpoint_kind(checkpoint)
    if kind == OTHER:
        raise fail(ConfigError(unknown_checkpoint_message(checkpoint)))
    if kind == GAUSSIAN_DECODER:
        text = _text_options(text_tower, text_tokenizer, text_model)
        given = (fsq, heads, decoder_heads, gaussian_decoder, gaussian_config)
        if any(x is not None for x in given) or text:
            click.echo(
                "--fsq/--kl, --heads, --decoder-heads, --gaussian-* and --text-* apply to "
                "tokenizers: ignored",
                err=True,
            )
        _gaussian_decoder(checkpoint, out_dir, config_path, licence_file, overwrite)
        return
    if gaussian_config is not None and gaussian_decoder is None:
        raise click.UsageError("--gaussian-config needs --gaussian-decoder")
    gaussian = {"gaussian_decoder": gaussian_decoder, "gaussian_config": gaussian_config}
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
                **_text_options(text_tower, text_tokenizer, text_model),
                **{k: v for k, v in gaussian.items() if v is not None},
            )
        except AtokenError as exc:
            raise fail(exc) from exc
        finally:  # shown on stderr, also when the conversion then fails
            for warning in caught:
                click.echo(f"Warning ({warning.category.__name__}): {warning.message}", err=True)
    also = f" with the Gaussian decoder {gaussian_decoder}" if gaussian_decoder else ""
    click.echo(
        f"converted {checkpoint}{also} into {folder} (licence notice: {folder / NOTICE_NAME})"
    )


def _text_options(tower: str | None, tokenizer: str | None, model: str | None) -> dict[str, str]:
    """The text-tower options given on the command line (``from_official`` checks them)."""
    given = {"text_tower": tower, "text_tokenizer": tokenizer, "text_model": model}
    return {k: v for k, v in given.items() if v is not None}


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
        raise fail(exc) from exc
    click.echo(
        f"converted the Gaussian decoder {checkpoint} into {folder} (load it with "
        f"atoken.official.load_gaussian_decoder; licence notice: {folder / NOTICE_NAME})"
    )
