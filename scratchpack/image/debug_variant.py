"""Debug variants as images: an image in, an image out, a shell's layer added.

``build --debug`` and ``debug IMAGE`` both make them, so they live here, below
the commands: with a static busybox laid on the image itself, or with the
application's root laid over a base image that has a shell
(:mod:`scratchpack.plan.debug` plans the files of either).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from scratchpack.errors import InputError
from scratchpack.image.config import history_entry, source_date_epoch
from scratchpack.image.media import Platform
from scratchpack.image.model import Image
from scratchpack.image.readers import ImageSaver, open_image
from scratchpack.image.tree import flattened_tree
from scratchpack.image.writer import BlobStore, assemble
from scratchpack.plan.busybox import busybox_applets
from scratchpack.plan.debug import (
    BUSYBOX_DIR,
    busybox_entries,
    merge_onto_base,
    tools_onto_image,
    with_path,
)
from scratchpack.plan.programs import DEFAULT_PATH
from scratchpack.plan.rootplan import RootPlan


def busybox_variant(store: BlobStore, image: Image, runtime: dict[str, Any], busybox: str) -> Image:
    """``image`` plus a layer with a static busybox at /busybox, on PATH."""
    epoch = source_date_epoch()
    layer = store.write_layer(busybox_entries(busybox, busybox_applets(busybox)), epoch)
    runtime = copy.deepcopy(runtime)
    runtime["Env"] = with_path(runtime.get("Env") or [], BUSYBOX_DIR)
    history = [*image.config.history, history_entry(epoch, "debug: busybox")]
    return assemble(store, [*image.layers, layer], runtime, image.platform, epoch, history)


def variant_on_base(
    store: BlobStore,
    engine: ImageSaver,
    workdir: Path,
    root: RootPlan,
    runtime: dict[str, Any],
    platform: Platform,
    base_image: str,
) -> Image:
    """The base image's layers, and ``root`` laid over them so that both still work."""
    base = open_image(base_image, workdir, engine)
    architecture = base.image.platform.architecture
    if architecture and architecture != platform.architecture:
        raise InputError(
            f"the debug base is {architecture} but the application is {platform.architecture}"
        )
    merged = merge_onto_base(root, flattened_tree(base.image, base_image))
    epoch = source_date_epoch()
    layer = store.write_layer(merged.sorted_entries(), epoch)
    history = [*base.image.config.history, history_entry(epoch, "debug: application")]
    return assemble(store, [*base.image.layers, layer], runtime, platform, epoch, history)


def tools_variant(
    store: BlobStore,
    image: Image,
    runtime: dict[str, Any],
    tools: RootPlan,
    where: str,
    busybox: str | None,
) -> tuple[Image, tuple[str, ...]]:
    """``image`` plus a layer of tools that shadows none of its files (and busybox at
    /busybox when given); the tools' directories and /busybox appended to PATH.

    Returns the image and the tools' paths left out because the image has them.
    """
    merged, left_out = tools_onto_image(tools, flattened_tree(image, where))
    epoch = source_date_epoch()
    layers = [store.write_layer(merged.sorted_entries(), epoch)]
    env = list(runtime.get("Env") or [])
    for directory in DEFAULT_PATH.split(":"):
        env = with_path(env, directory)
    if busybox is not None:
        layers.append(store.write_layer(busybox_entries(busybox, busybox_applets(busybox)), epoch))
        env = with_path(env, BUSYBOX_DIR)
    runtime = copy.deepcopy(runtime)
    runtime["Env"] = env
    history = [*image.config.history, *(history_entry(epoch, "debug: tools") for _ in layers)]
    variant = assemble(store, [*image.layers, *layers], runtime, image.platform, epoch, history)
    return variant, left_out
