"""The recipe: what a platform's environment is made of, as one frozen value.

Owns the YAML documents and their ``extends`` chains (``document``, ``merge``), validation with
``file:line: key.path`` messages (``validation``), the model (``model``, ``base``,
``transports``), the output choices (``formats``) and what settings imply (``implied``).
Takes a recipe file path; hands on a frozen ``Recipe`` and the ``Merged`` documents it came
from (``load.load_recipe``). Imports nothing of the project but ``builder.errors``.
"""
