"""The Docker engine: every use of the docker SDK lives in this package.

:mod:`.client` is the boundary (build, load, save, inspect, tag, run and
containers); :mod:`.context` renders the Dockerfile template and streams the
build context; :mod:`.attach` runs a sidecar beside a running container;
:mod:`.dialect` holds what Podman's Docker-compatible API answers differently;
:mod:`.remote` reaches an engine on another machine (``ssh://``, ``tcp://`` with TLS). Every
failure here is an :class:`~scratchpack.errors.EngineError` (exit 3).
"""
