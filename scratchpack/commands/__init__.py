"""The commands: each runs the stages in order over plain data and returns a typed result.

The command line (:mod:`scratchpack.cli`) only parses options into a request,
calls one of these, and prints the result.
"""
