"""Planning: what an image will hold and how it runs, decided before anything is written.

Each planner is a plain function from its inputs (closures, a root, an image's
configuration) to a plan: entries keyed by in-image path, each with the
reason it is there. Nothing here writes an image or talks to an engine.
"""
