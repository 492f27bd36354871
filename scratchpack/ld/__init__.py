"""The loader layer: read ELF files and resolve their closures as ld.so would.

Nothing here imports docker or requests, and nothing is executed: a closure
is computed from the files alone, inside the host's root or any other.
"""
