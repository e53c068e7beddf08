"""One-line texts of errors, for reports that must fit on one line.

:func:`error_line` lives in the lowest layer (:mod:`fooling.encodings.errors`), beside
:class:`~fooling.encodings.errors.UserError`, so that the encodings' plugin loader uses it too.
"""

from __future__ import annotations

from fooling.encodings.errors import error_line

__all__ = ["error_line"]
