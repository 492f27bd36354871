"""Images from Debian packages: resolved by apt in a private state, unpacked, never installed.

:mod:`~scratchpack.packages.apt` resolves and downloads with apt's own solver
and signature checks; :mod:`~scratchpack.packages.deb` reads a ``.deb``;
:mod:`~scratchpack.packages.root` unpacks packages into a root that the rest of
the pipeline reads like ``build --root``; :mod:`~scratchpack.packages.lock`
pins what was used.
"""
