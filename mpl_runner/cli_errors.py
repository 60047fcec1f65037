from __future__ import annotations
from mpl_runner.errors import UserError

def one_line_error(err):
    if isinstance(err, UserError):
        return str(err)
    return None
