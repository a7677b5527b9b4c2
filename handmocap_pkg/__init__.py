"""handmocap: capture hand motion from ordinary video into Blender.

The distribution maps the repository's top-level folders into this namespace
(``inference/`` -> ``handmocap.inference`` and so on, see pyproject.toml), so no
bare ``models`` or ``inference`` module ever lands in a shared site-packages.
"""

__version__ = "0.1.0"
