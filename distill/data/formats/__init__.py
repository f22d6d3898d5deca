"""Dataset formats: the ``DATA_FORMATS`` registry and the ``DataFormat`` interface.

A format is one file: a settings dataclass (its own recipe keys) and a registered ``DataFormat``
subclass whose ``parse`` reads one split into a ``DatasetIndex``::

    from dataclasses import dataclass
    from distill.data.formats import DATA_FORMATS, DataFormat

    @dataclass
    class CsvSettings:
        delimiter: str = ","

    @DATA_FORMATS.register("csv")
    class CsvFormat(DataFormat):
        settings = CsvSettings

        def parse(self, root, split, settings, class_names, **read):
            ...  # RawSamples -> records.validate_samples(raws, names, **read, source=...)

The recipe then says ``data.format: csv`` and ``data.options: {delimiter: ";"}``. The built-in
formats (``coco``, ``voc``, ``yolo``, ``synthetic``) are this package's modules, loaded through
the ``distill.data_formats`` entry points (pyproject.toml) the first time a format is looked up;
their settings are the top-level ``data`` keys of the same name (``data.image_dir``,
``data.val_fraction``, ``data.split_seed``). This module stays light: the recipe checks
``data.format`` against the registry without importing torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from distill.data.records import DatasetIndex
from distill.data.settings import DataConfig
from distill.errors import RecipeError
from distill.registry import Registry

DATA_FORMATS = Registry("dataset format", entry_point_group="distill.data_formats",
                        installed_by="distill-det")


@dataclass
class NoSettings:
    """A format without settings of its own."""


class DataFormat:
    """How one dataset format is read. Subclass it, set ``settings``, implement ``parse``."""

    settings: ClassVar[type] = NoSettings  # dataclass of the format's own keys (with defaults)
    # what data.train / data.val mean when left at their defaults (COCO JSON paths) in this
    # format, e.g. {"train": "train", "val": "val"}; empty: the values as they are
    default_splits: ClassVar[dict[str, str]] = {}

    def prepare(self, root: Path, settings: Any) -> None:
        """Make the dataset available under ``root`` before it is read (default: nothing)."""

    def parse(self, root: Path, split: str, settings: Any, class_names: list[str] | None,
              **read: Any) -> DatasetIndex:
        """Read and validate ``split``. ``class_names``: the label order to use (the recipe's
        ``data.classes`` for train, train's classes for val), or None for the dataset's own;
        a format whose files define the classes may ignore it (the splits are compared after).
        ``read``: ``bad_samples``, ``max_images``, ``verify_images`` for ``validate_samples``."""
        raise NotImplementedError(f"{type(self).__name__}.parse")

    def split_classes(self, root: Path, split: str, settings: Any) -> list[str] | None:
        """The class names found in ``split`` where the class list comes from the objects
        themselves (val is then checked for classes train lacks); None: not needed."""
        return None

    def split_name(self, which: str, value: str) -> str:
        """The split that ``data.<which>`` (``train`` / ``val``) names in this format."""
        if value != getattr(DataConfig, which):
            return value
        return self.default_splits.get(which, value)


def data_format(name: str, source: str = "data") -> DataFormat:
    """The registered format ``name``; a ``RecipeError`` listing the registered names."""
    if name not in DATA_FORMATS:
        default = DataConfig.format  # named first, the others sorted
        names = [default, *(n for n in DATA_FORMATS.names() if n != default)]
        raise RecipeError(f"{source}: 'data.format' is '{name}', expected one of "
                          f"{', '.join(names)}")
    return DATA_FORMATS.get(name)()


def format_settings(fmt: DataFormat, data: Mapping[str, Any], source: str = "data") -> Any:
    """``fmt.settings`` of a data section: each field from ``data.options``, else from the
    ``data`` key of the same name, else its default. Unknown or mistyped options stop with a
    ``RecipeError`` naming the valid keys."""
    known = [f.name for f in fields(fmt.settings)]
    options = dict(data.get("options") or {})
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise RecipeError(
            f"{source}: unknown key(s) {unknown} in 'data.options' of format "
            f"'{data.get('format')}'; valid keys: {', '.join(known) or 'none'}")
    try:  # typed like the recipe: a value of the wrong type is named
        typed = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(fmt.settings), options))
    except OmegaConfBaseException as err:
        key, msg = getattr(err, "full_key", None) or "?", str(err.msg).splitlines()[0]
        raise RecipeError(f"{source}: bad value for 'data.options.{key}': {msg}") from err
    return replace(typed, **{k: data[k] for k in known if k in data and k not in options})


def check_data_section(data: Mapping[str, Any], source: str) -> None:
    """Check a recipe's ``data.format`` against the registry and its ``data.options``."""
    format_settings(data_format(str(data.get("format")), source), data, source)
