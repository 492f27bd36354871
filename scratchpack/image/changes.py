"""What a rebuilt image changes against the one it replaces: layers kept, layers new, bytes.

A registry holds blobs by digest, so a push uploads exactly the blobs the
previous image did not have; this is the figure ``build --update`` reports
(the go-containerregistry way: compare descriptors, never the bytes).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from scratchpack.image.model import Image, Layer


@dataclass(frozen=True)
class LayerChange:
    """One layer of the new image, or one the old image had and the new one dropped."""

    digest: str
    size: int  # bytes as stored (what a push sends)
    kept: bool  # the previous image has this very blob

    def to_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "size": self.size, "kept": self.kept}


@dataclass(frozen=True)
class ImageChanges:
    """The new image's layers in order, each kept or new; the dropped ones; what a push sends."""

    layers: tuple[LayerChange, ...]
    dropped: tuple[LayerChange, ...]
    config_changed: bool
    upload_bytes: int  # the new layers and, when it changed, the config

    @property
    def identical(self) -> bool:
        return not self.config_changed and all(layer.kept for layer in self.layers)

    @property
    def new_layers(self) -> tuple[LayerChange, ...]:
        return tuple(layer for layer in self.layers if not layer.kept)

    def to_json(self) -> dict[str, Any]:
        return {
            "identical": self.identical,
            "config_changed": self.config_changed,
            "upload_bytes": self.upload_bytes,
            "layers": [layer.to_json() for layer in self.layers],
            "dropped": [layer.to_json() for layer in self.dropped],
        }


def image_changes(previous: Image | None, new: Image) -> ImageChanges:
    """``new`` against ``previous`` (None: nothing to compare with, every blob is new)."""
    before = _digests(previous.layers if previous is not None else ())
    after = _digests(new.layers)
    layers = tuple(
        LayerChange(layer.digest, layer.size, layer.digest in before) for layer in new.layers
    )
    dropped = tuple(
        LayerChange(layer.digest, layer.size, False)
        for layer in (previous.layers if previous is not None else ())
        if layer.digest not in after
    )
    config_changed = previous is None or previous.image_id != new.image_id
    upload = sum(layer.size for layer in _unique(layers) if not layer.kept)
    if config_changed:
        upload += new.config_descriptor.size
    return ImageChanges(layers, _unique(dropped), config_changed, upload)


def _digests(layers: Iterable[Layer]) -> set[str]:
    return {layer.digest for layer in layers}


def _unique(changes: Iterable[LayerChange]) -> tuple[LayerChange, ...]:
    """Each blob once: an image may list the same layer twice, a push sends it once."""
    seen: dict[str, LayerChange] = {}
    for change in changes:
        seen.setdefault(change.digest, change)
    return tuple(seen.values())
