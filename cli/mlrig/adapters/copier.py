"""copier behind one door: render and update a repository from mlrig's template.

Core code calls these functions with plain paths and answers; copier's errors become
mlrig's own.
"""

from __future__ import annotations
