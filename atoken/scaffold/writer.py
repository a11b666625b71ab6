"""``atoken plugins new NAME --kind KIND``: write a working plugin package from templates.

The templates are package data (``templates/common/`` for every kind, ``templates/<kind>/``
for one; a kind's file replaces a common one of the same path). A template's path and text
name the plugin through placeholders, all made from NAME, so a generated package never names
another's components:

========================  ======================  =========================================
placeholder               for NAME ``sea_ice``     what
========================  ======================  =========================================
``{{name}}``              ``sea_ice``             plugin, entry point and component name
``{{package}}``           ``atoken_sea_ice``      the import package
``{{distribution}}``      ``atoken-sea-ice``      the distribution and the package's folder
``{{Class}}``             ``SeaIce``              the prefix of class names
``{{kind}}``              ``modality``            the kind
``{{what}}``              ``a modality``          the kind in words
========================  ======================  =========================================

In paths, ``PACKAGE`` and ``NAME`` stand for the package and the name (``PACKAGE/modality.py``,
``tests/test_NAME.py``); a template file ends in ``.tmpl``, which the copy drops.
"""

from __future__ import annotations

import keyword
import re
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from atoken.core.errors import ConfigError, OutputFolderError

__all__ = ["KINDS", "new_plugin", "package_files"]

#: The kinds of package ``plugins new`` writes, and the registry each one's component joins.
KINDS: dict[str, str] = {
    "modality": "modalities",
    "loss": "losses",
    "head": "heads",
    "source": "data_sources",
}
_WHAT = {
    "modality": "a modality",
    "loss": "a loss",
    "head": "a decoder head",
    "source": "a data source",
}
#: A NAME: a lower-case identifier of at most 24 characters, ending in a letter or a digit (so
#: the distribution's name is valid and the generated code keeps to lines of 100 columns).
_NAME = re.compile(r"[a-z]([a-z0-9_]{0,22}[a-z0-9])?")
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def _check_name(name: str) -> None:
    """A NAME is a lower-case Python identifier (it becomes ``atoken_<name>``).

    Raises:
        ConfigError: naming the NAME and, where one exists, the identifier it could be.
    """
    if _NAME.fullmatch(name) and not keyword.iskeyword(name):
        return
    fixed = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_")
    hint = f" (e.g. {fixed!r})" if _NAME.fullmatch(fixed) and fixed != name else ""
    raise ConfigError(
        f"plugin name {name!r} must be a lower-case Python identifier of at most 24 "
        f"characters: a letter, then letters, digits or underscores, ending in a letter or a "
        f"digit{hint}; it names the package atoken_<name> and the component"
    )


def _check_free(name: str, kind: str) -> None:
    """NAME is neither a loaded plugin nor a registered component of the kind (the generated
    tests register the plugin and its components under NAME)."""
    from atoken.plugins.manager import diagnose_plugins

    diagnosis = diagnose_plugins()
    if name in {p.name for p in diagnosis.plugins}:
        raise ConfigError(f"a plugin named {name!r} is already installed; pick another name")
    wanted = [(KINDS[kind], name)]
    if kind == "modality":  # and its data source
        wanted.append(("data_sources", f"{name}_samples"))
    for attr, component in wanted:
        registry = getattr(diagnosis.registries, attr)
        if component in registry:
            raise ConfigError(
                f"{registry.kind} {component!r} is already registered by plugin "
                f"{registry.plugin_of(component)!r}; pick another name"
            )


def _distribution(name: str) -> str:
    """``atoken-<name>`` in the normalised form pip shows (underscores as hyphens)."""
    return f"atoken-{name.replace('_', '-')}"


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_") if part)


def _templates(kind: str) -> dict[str, Traversable]:
    """Relative template path -> template, the kind's replacing the common ones."""
    root = resources.files("atoken.scaffold") / "templates"
    found: dict[str, Traversable] = {}
    for folder in ("common", kind):
        stack = [(root / folder, "")]
        while stack:
            node, prefix = stack.pop()
            for child in node.iterdir():
                path = f"{prefix}{child.name}"
                if child.is_dir():
                    stack.append((child, f"{path}/"))
                elif path.endswith(".tmpl"):
                    found[path.removesuffix(".tmpl")] = child
    return found


def package_files(name: str, kind: str) -> dict[str, str]:
    """The files of the package ``plugins new NAME --kind KIND`` writes: relative path ->
    text (nothing is written).

    Raises:
        ConfigError: an unknown kind or a NAME that is not a lower-case identifier.
    """
    if kind not in KINDS:
        raise ConfigError(f"unknown plugin kind {kind!r}; one of {', '.join(KINDS)}")
    _check_name(name)
    values = {
        "name": name,
        "package": f"atoken_{name}",
        "distribution": _distribution(name),
        "Class": _camel(name),
        "kind": kind,
        "what": _WHAT[kind],
    }

    def fill(match: re.Match[str]) -> str:
        return values[match.group(1)]  # a KeyError is a template's bug, not the user's

    files = {}
    for path, template in sorted(_templates(kind).items()):
        target = path.replace("PACKAGE", values["package"]).replace("NAME", name)
        files[target] = _PLACEHOLDER.sub(fill, template.read_text(encoding="utf-8"))
    return files


def new_plugin(name: str, kind: str, out: str | Path = ".") -> Path:
    """Write the package ``atoken-NAME/`` of a ``kind`` plugin into ``out``; its folder
    (underscores of NAME become hyphens in the folder's name, as in the distribution's).

    The package passes its own tests as written (``pytest`` in its folder, installed or not):
    they register the plugin in-process, run atoken's contracts on its component and a
    Hypothesis property, and (modality, source) train it for a few steps with ``train.toml``.

    Raises:
        ConfigError: an unknown kind, a NAME that is not a lower-case identifier, or one an
            installed plugin or a registered component of the kind already has.
        OutputFolderError: ``out/atoken-NAME`` exists (nothing is ever overwritten).
    """
    files = package_files(name, kind)
    _check_free(name, kind)
    folder = Path(out) / _distribution(name)
    if folder.exists():
        raise OutputFolderError(
            "exists; plugins new never overwrites: pick another NAME or --out", folder=str(folder)
        )
    for path, text in files.items():
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return folder
